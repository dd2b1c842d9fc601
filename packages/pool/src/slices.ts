/**
 * The DP/TP slice planner: which GPUs and which port each engine instance on a node gets.
 * Pure, so the worker (at start-up) and the table tests in `slices.test.ts` get one answer,
 * and the tests need no GPUs. The GPUs are the ones SLURM allocated, read from the job's
 * environment, so nodes of different sizes in one partition each get what fits.
 */
import { EsError } from '@es/protocol';
import { tensorParallelSizes } from './deployment.js';

/** Input of {@link planNodeSlices} and {@link planSlices}. */
export interface SlicePlanOptions {
  /**
   * `CUDA_VISIBLE_DEVICES` as the job sees it (e.g. `"2,3,6,7"`): the ids of the GPUs SLURM
   * allocated. When set (and not blank), slices are made of every one of these ids, in this
   * order.
   */
  visibleDevices?: string | undefined;
  /**
   * `SLURM_GPUS_ON_NODE` as the job sees it: how many GPUs SLURM allocated on this node.
   * Used (ids `0..n-1`) when `visibleDevices` says nothing.
   */
  gpusOnNode?: string | undefined;
  /**
   * GPUs per node (`--gpus-per-node`), the fallback when the job says nothing of its
   * allocation (neither `visibleDevices` nor `gpusOnNode`): ids `0..gpuCount-1`. With an
   * allocation, a different count is only noted: the allocation wins.
   */
  gpuCount?: number | undefined;
  /** GPUs per engine instance (`--tensor-parallel-size`). */
  tensorParallelSize: number;
  /** Port of instance 0; instance i gets `basePort + i`. */
  basePort: number;
}

/** Where a {@link SlicePlan}'s GPU ids came from. */
export type GpuSource = 'CUDA_VISIBLE_DEVICES' | 'SLURM_GPUS_ON_NODE' | 'gpus-per-node';

/** What {@link planNodeSlices} decided for one node. */
export interface SlicePlan {
  /** One engine instance per slice, in order. */
  slices: PlannedSlice[];
  /** Every GPU id of the job, in order (`slices` use a prefix of them). */
  gpus: number[];
  /** Where `gpus` came from. */
  source: GpuSource;
  /** GPU ids no slice uses: the remainder when the GPUs do not divide by the TP size. */
  idle: number[];
  /**
   * Sentences for the worker's log, each naming the values and what to change: idle GPUs,
   * an allocation that differs from `--gpus-per-node`, SLURM's two variables disagreeing.
   */
  notes: string[];
}

/** One planned engine instance. */
export interface PlannedSlice {
  /** DP rank on the node, 0-based. */
  index: number;
  /** GPU ids for this instance's `CUDA_VISIBLE_DEVICES`. */
  gpus: number[];
  /** Port the instance should listen on (the worker may pick another if it is taken). */
  port: number;
}

/** Raised when a slice plan is impossible; `param` names the option to fix. */
export class SlicePlanError extends EsError<'invalid_slice_plan'> {
  override readonly name = 'SlicePlanError';
  /** `tensorParallelSize`, `gpuCount`, `visibleDevices`, `gpusOnNode` or `basePort`. */
  declare readonly param: keyof SlicePlanOptions;

  constructor(param: keyof SlicePlanOptions, message: string) {
    super('invalid_slice_plan', message, { param });
  }
}

/**
 * Parse a `CUDA_VISIBLE_DEVICES` value into GPU ids. Returns `undefined` when the variable
 * says nothing (unset or blank); throws when it names no usable GPU (`NoDevFiles`, `-1`,
 * UUIDs or duplicates).
 */
export function parseVisibleDevices(value: string | undefined): number[] | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const parts = value.split(',').map((part) => part.trim());
  const ids = parts.map((part) => {
    if (!/^\d+$/.test(part)) {
      throw new SlicePlanError(
        'visibleDevices',
        `CUDA_VISIBLE_DEVICES="${value}" is not a list of GPU indices (got "${part}"); ` +
          'request GPUs from SLURM (--gpus-per-node), or unset it and pass --gpus-per-node',
      );
    }
    return Number(part);
  });
  const duplicate = ids.find((id, i) => ids.indexOf(id) !== i);
  if (duplicate !== undefined) {
    throw new SlicePlanError(
      'visibleDevices',
      `CUDA_VISIBLE_DEVICES="${value}" lists GPU ${duplicate} twice`,
    );
  }
  return ids;
}

/** Parse `SLURM_GPUS_ON_NODE`; `undefined` when unset or blank. */
function parseGpusOnNode(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  if (!/^\d+$/.test(value.trim())) {
    throw new SlicePlanError(
      'gpusOnNode',
      `SLURM_GPUS_ON_NODE="${value}" is not a GPU count; unset it, or run the worker in a SLURM job that requests GPUs`,
    );
  }
  return Number(value.trim());
}

/** `0,1,2,3,4,5` → `0-5`; other lists as they are (`2,3,6,7`). */
function idList(ids: readonly number[]): string {
  const run = ids.length > 2 && ids.every((id, i) => i === 0 || id === (ids[i - 1] ?? 0) + 1);
  return run ? `${ids[0]}-${ids[ids.length - 1]}` : ids.join(',');
}

/** The job's GPU ids and where they came from, with notes on disagreeing sources. */
function allocatedGpus(options: SlicePlanOptions): {
  gpus: number[];
  source: GpuSource;
  notes: string[];
} {
  const { gpuCount } = options;
  const visible = parseVisibleDevices(options.visibleDevices);
  const onNode = parseGpusOnNode(options.gpusOnNode);
  const notes: string[] = [];
  let gpus: number[];
  let source: GpuSource;
  let described: string;
  if (visible) {
    gpus = visible;
    source = 'CUDA_VISIBLE_DEVICES';
    described = `CUDA_VISIBLE_DEVICES=${options.visibleDevices?.trim()}`;
    if (onNode !== undefined && onNode !== visible.length) {
      notes.push(
        `SLURM_GPUS_ON_NODE=${onNode} but CUDA_VISIBLE_DEVICES lists ${visible.length} GPUs ` +
          `(${visible.join(',')}): planning from CUDA_VISIBLE_DEVICES, the GPUs the engines will see`,
      );
    }
  } else if (onNode !== undefined) {
    if (onNode === 0) {
      throw new SlicePlanError(
        'gpusOnNode',
        'SLURM allocated no GPUs to this job (SLURM_GPUS_ON_NODE=0): submit it with GPUs (sbatch --gpus-per-node=N)',
      );
    }
    gpus = Array.from({ length: onNode }, (_, i) => i);
    source = 'SLURM_GPUS_ON_NODE';
    described = `SLURM_GPUS_ON_NODE=${onNode}`;
  } else if (gpuCount !== undefined) {
    return {
      gpus: Array.from({ length: gpuCount }, (_, i) => i),
      source: 'gpus-per-node',
      notes,
    };
  } else {
    throw new SlicePlanError(
      'gpuCount',
      'no GPUs to plan: neither CUDA_VISIBLE_DEVICES nor SLURM_GPUS_ON_NODE is set and no GPU count was given (--gpus-per-node)',
    );
  }
  if (gpuCount !== undefined && gpuCount !== gpus.length) {
    notes.push(
      `--gpus-per-node is ${gpuCount} but SLURM allocated ${gpus.length} GPUs on this node ` +
        `(${described}): planning from the ${gpus.length} allocated`,
    );
  }
  return { gpus, source, notes };
}

/**
 * Plan the engine instances of one node from the GPUs the job was given: the ids of
 * `CUDA_VISIBLE_DEVICES`, else `0..SLURM_GPUS_ON_NODE-1`, else `0..gpuCount-1`
 * (`--gpus-per-node`), cut into disjoint slices of `tensorParallelSize` GPUs with
 * consecutive ports. GPUs that do not make a whole slice stay idle, and a note names them;
 * only a job too small for one slice is an error.
 * @example
 * planNodeSlices({ visibleDevices: '0,1,2,3,4,5,6,7', tensorParallelSize: 3, basePort: 8001 });
 * // slices [0,1,2] on 8001 and [3,4,5] on 8002; idle [6, 7]; notes: ['GPUs 6,7 idle: ...']
 */
export function planNodeSlices(options: SlicePlanOptions): SlicePlan {
  const { tensorParallelSize: tp, basePort, gpuCount } = options;
  if (!Number.isInteger(tp) || tp < 1) {
    throw new SlicePlanError(
      'tensorParallelSize',
      `tensor parallel size must be a positive integer, got ${tp}`,
    );
  }
  if (gpuCount !== undefined && (!Number.isInteger(gpuCount) || gpuCount < 1)) {
    throw new SlicePlanError(
      'gpuCount',
      `GPUs per node must be a positive integer, got ${gpuCount}`,
    );
  }
  const { gpus, source, notes } = allocatedGpus(options);
  const count = Math.floor(gpus.length / tp);
  if (count === 0) {
    throw new SlicePlanError(
      'tensorParallelSize',
      `tensor parallel size ${tp} needs ${tp} GPUs but this job has ${gpus.length} ` +
        `(${gpus.join(',')}, from ${source}): choose a tensor parallel size of at most ${gpus.length}, ` +
        `or ask SLURM for at least ${tp} GPUs per node`,
    );
  }
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + count - 1 > 65535) {
    throw new SlicePlanError(
      'basePort',
      `base port ${basePort} cannot hold ${count} instance port(s) (ports must lie in 1-65535)`,
    );
  }
  const used = count * tp;
  const idle = gpus.slice(used);
  if (idle.length > 0) {
    notes.push(
      `GPU${idle.length === 1 ? '' : 's'} ${idList(idle)} idle: ${gpus.length} GPUs (from ${source}) ` +
        `do not divide into slices of tensor parallel size ${tp}; ${count} instance${count === 1 ? ' uses' : 's use'} ` +
        `GPUs ${idList(gpus.slice(0, used))}. Use every GPU with a tensor parallel size that divides ` +
        `${gpus.length} (${tensorParallelSizes(gpus.length).join(', ')}), or nodes with a multiple of ${tp} GPUs`,
    );
  }
  return {
    slices: Array.from({ length: count }, (_, index) => ({
      index,
      gpus: gpus.slice(index * tp, (index + 1) * tp),
      port: basePort + index,
    })),
    gpus,
    source,
    idle,
    notes,
  };
}

/**
 * The slices of {@link planNodeSlices}, without its notes.
 * @example
 * planSlices({ visibleDevices: '2,3,6,7', tensorParallelSize: 2, basePort: 8001 });
 * // [{ index: 0, gpus: [2, 3], port: 8001 }, { index: 1, gpus: [6, 7], port: 8002 }]
 */
export function planSlices(options: SlicePlanOptions): PlannedSlice[] {
  return planNodeSlices(options).slices;
}
