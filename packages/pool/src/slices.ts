/**
 * The DP/TP slice planner: which GPUs and which port each engine instance on a node gets.
 * Pure, so the worker (at start-up) and the table tests in `slices.test.ts` get one answer,
 * and the tests need no GPUs.
 */
import { EsError } from '@es/protocol';

/** Input of {@link planSlices}. */
export interface SlicePlanOptions {
  /**
   * `CUDA_VISIBLE_DEVICES` as the job sees it (e.g. `"2,3,6,7"`). When set (and not empty
   * of meaning), slices are made of these ids, in this order.
   */
  visibleDevices?: string | undefined;
  /**
   * GPUs to use (`--gpus-per-node`). Without `visibleDevices` the ids are `0..gpuCount-1`;
   * with it, the first `gpuCount` visible ids are used.
   */
  gpuCount?: number | undefined;
  /** GPUs per engine instance (`--tensor-parallel-size`). */
  tensorParallelSize: number;
  /** Port of instance 0; instance i gets `basePort + i`. */
  basePort: number;
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
  /** `tensorParallelSize`, `gpuCount`, `visibleDevices` or `basePort`. */
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
          'request GPUs from SLURM (--gpus-per-node) or pass --gpus-per-node without it',
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

/**
 * Plan `gpus / tensorParallelSize` engine instances with disjoint GPU slices and
 * consecutive ports.
 * @example
 * planSlices({ visibleDevices: '2,3,6,7', tensorParallelSize: 2, basePort: 8001 });
 * // [{ index: 0, gpus: [2, 3], port: 8001 }, { index: 1, gpus: [6, 7], port: 8002 }]
 */
export function planSlices(options: SlicePlanOptions): PlannedSlice[] {
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
  const visible = parseVisibleDevices(options.visibleDevices);
  let ids: number[];
  if (visible) {
    if (gpuCount !== undefined && gpuCount > visible.length) {
      throw new SlicePlanError(
        'gpuCount',
        `GPUs per node is ${gpuCount} but only ${visible.length} GPUs are visible ` +
          `(CUDA_VISIBLE_DEVICES=${options.visibleDevices}); lower --gpus-per-node or request more GPUs`,
      );
    }
    ids = visible.slice(0, gpuCount ?? visible.length);
  } else if (gpuCount !== undefined) {
    ids = Array.from({ length: gpuCount }, (_, i) => i);
  } else {
    throw new SlicePlanError(
      'gpuCount',
      'no GPUs to plan: CUDA_VISIBLE_DEVICES is not set and no GPU count was given (--gpus-per-node)',
    );
  }
  if (ids.length % tp !== 0) {
    throw new SlicePlanError(
      'tensorParallelSize',
      `tensor parallel size ${tp} does not divide the ${ids.length} GPUs (${ids.join(',')}); ` +
        `choose a tensor parallel size that divides ${ids.length}`,
    );
  }
  const count = ids.length / tp;
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + count - 1 > 65535) {
    throw new SlicePlanError(
      'basePort',
      `base port ${basePort} cannot hold ${count} instance port(s) (ports must lie in 1-65535)`,
    );
  }
  return Array.from({ length: count }, (_, index) => ({
    index,
    gpus: ids.slice(index * tp, (index + 1) * tp),
    port: basePort + index,
  }));
}
