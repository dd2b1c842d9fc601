import { describe, expect, it } from 'vitest';
import { SlicePlanError, parseVisibleDevices, planNodeSlices, planSlices } from './slices.js';
import type { GpuSource, SlicePlanOptions } from './slices.js';

describe('planSlices', () => {
  it.each<[string, SlicePlanOptions, [number[], number][]]>([
    [
      'TP=4 on 8 GPUs',
      { gpuCount: 8, tensorParallelSize: 4, basePort: 8001 },
      [
        [[0, 1, 2, 3], 8001],
        [[4, 5, 6, 7], 8002],
      ],
    ],
    [
      'TP=8 on 8 GPUs',
      { gpuCount: 8, tensorParallelSize: 8, basePort: 8001 },
      [[[0, 1, 2, 3, 4, 5, 6, 7], 8001]],
    ],
    [
      'TP=1 on 4 GPUs',
      { gpuCount: 4, tensorParallelSize: 1, basePort: 9000 },
      [
        [[0], 9000],
        [[1], 9001],
        [[2], 9002],
        [[3], 9003],
      ],
    ],
    [
      'slices follow the visible ids',
      { visibleDevices: '2,3,6,7', tensorParallelSize: 2, basePort: 8001 },
      [
        [[2, 3], 8001],
        [[6, 7], 8002],
      ],
    ],
    [
      'visible ids win over a matching count',
      { visibleDevices: '0,1,2,3,4,5,6,7', gpuCount: 8, tensorParallelSize: 4, basePort: 8001 },
      [
        [[0, 1, 2, 3], 8001],
        [[4, 5, 6, 7], 8002],
      ],
    ],
    [
      'the allocation wins over a smaller count',
      { visibleDevices: '4, 5, 6, 7', gpuCount: 2, tensorParallelSize: 1, basePort: 8001 },
      [
        [[4], 8001],
        [[5], 8002],
        [[6], 8003],
        [[7], 8004],
      ],
    ],
    [
      'the allocation wins over a larger count',
      { visibleDevices: '0,1,2,3', gpuCount: 8, tensorParallelSize: 4, basePort: 8001 },
      [[[0, 1, 2, 3], 8001]],
    ],
    [
      'SLURM_GPUS_ON_NODE without CUDA_VISIBLE_DEVICES',
      { gpusOnNode: '4', gpuCount: 8, tensorParallelSize: 2, basePort: 8001 },
      [
        [[0, 1], 8001],
        [[2, 3], 8002],
      ],
    ],
    [
      'a blank CUDA_VISIBLE_DEVICES falls back to the count',
      { visibleDevices: ' ', gpuCount: 2, tensorParallelSize: 2, basePort: 8001 },
      [[[0, 1], 8001]],
    ],
    [
      'GPUs that do not divide by TP: the slices that fit',
      { visibleDevices: '0,1,2,3,4,5,6,7', tensorParallelSize: 3, basePort: 8001 },
      [
        [[0, 1, 2], 8001],
        [[3, 4, 5], 8002],
      ],
    ],
  ])('%s', (_name, options, expected) => {
    expect(planSlices(options)).toEqual(
      expected.map(([gpus, port], index) => ({ index, gpus, port })),
    );
  });

  it.each<[string, SlicePlanOptions, keyof SlicePlanOptions, RegExp]>([
    [
      'TP larger than the GPUs',
      { visibleDevices: '0,1', tensorParallelSize: 4, basePort: 8001 },
      'tensorParallelSize',
      /tensor parallel size 4 needs 4 GPUs but this job has 2 \(0,1, from CUDA_VISIBLE_DEVICES\)/,
    ],
    [
      'TP zero',
      { gpuCount: 8, tensorParallelSize: 0, basePort: 8001 },
      'tensorParallelSize',
      /positive integer, got 0/,
    ],
    [
      'a count of zero from SLURM',
      { gpusOnNode: '0', gpuCount: 8, tensorParallelSize: 1, basePort: 8001 },
      'gpusOnNode',
      /SLURM allocated no GPUs to this job \(SLURM_GPUS_ON_NODE=0\)/,
    ],
    [
      'a SLURM_GPUS_ON_NODE that is not a count',
      { gpusOnNode: 'gpu:4', tensorParallelSize: 1, basePort: 8001 },
      'gpusOnNode',
      /SLURM_GPUS_ON_NODE="gpu:4" is not a GPU count/,
    ],
    [
      'nothing to plan',
      { tensorParallelSize: 1, basePort: 8001 },
      'gpuCount',
      /neither CUDA_VISIBLE_DEVICES nor SLURM_GPUS_ON_NODE is set and no GPU count/,
    ],
    [
      'SLURM without GPUs',
      { visibleDevices: 'NoDevFiles', tensorParallelSize: 1, basePort: 8001 },
      'visibleDevices',
      /not a list of GPU indices/,
    ],
    [
      'duplicate ids',
      { visibleDevices: '1,1', tensorParallelSize: 1, basePort: 8001 },
      'visibleDevices',
      /lists GPU 1 twice/,
    ],
    [
      'ports past 65535',
      { gpuCount: 8, tensorParallelSize: 1, basePort: 65530 },
      'basePort',
      /base port 65530 cannot hold 8 instance port/,
    ],
  ])('rejects %s', (_name, options, field, message) => {
    let error: unknown;
    try {
      planSlices(options);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SlicePlanError);
    expect(error).toMatchObject({
      param: field,
      code: 'invalid_slice_plan',
      message: expect.stringMatching(message),
    });
  });
});

describe('planNodeSlices', () => {
  it.each<[string, SlicePlanOptions, GpuSource, number[], string[]]>([
    [
      'CUDA_VISIBLE_DEVICES dividing by TP: nothing to say',
      {
        visibleDevices: '0,1,2,3',
        gpusOnNode: '4',
        gpuCount: 4,
        tensorParallelSize: 2,
        basePort: 1,
      },
      'CUDA_VISIBLE_DEVICES',
      [],
      [],
    ],
    [
      '8 GPUs into TP 3 slices: GPUs 6,7 idle',
      { visibleDevices: '0,1,2,3,4,5,6,7', gpusOnNode: '8', tensorParallelSize: 3, basePort: 1 },
      'CUDA_VISIBLE_DEVICES',
      [6, 7],
      [
        'GPUs 6,7 idle: 8 GPUs (from CUDA_VISIBLE_DEVICES) do not divide into slices of tensor ' +
          'parallel size 3; 2 instances use GPUs 0-5. Use every GPU with a tensor parallel size ' +
          'that divides 8 (1, 2, 4, 8), or nodes with a multiple of 3 GPUs',
      ],
    ],
    [
      'a whole 8-GPU node with --gpus-per-node 4 (the minimum asked for)',
      {
        visibleDevices: '0,1,2,3,4,5,6,7',
        gpusOnNode: '8',
        gpuCount: 4,
        tensorParallelSize: 4,
        basePort: 1,
      },
      'CUDA_VISIBLE_DEVICES',
      [],
      [
        '--gpus-per-node is 4 but SLURM allocated 8 GPUs on this node ' +
          '(CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7): planning from the 8 allocated',
      ],
    ],
    [
      '5 GPUs from SLURM_GPUS_ON_NODE into TP 2 slices: GPU 4 idle',
      { gpusOnNode: '5', tensorParallelSize: 2, basePort: 1 },
      'SLURM_GPUS_ON_NODE',
      [4],
      [
        'GPU 4 idle: 5 GPUs (from SLURM_GPUS_ON_NODE) do not divide into slices of tensor ' +
          'parallel size 2; 2 instances use GPUs 0-3. Use every GPU with a tensor parallel size ' +
          'that divides 5 (1, 5), or nodes with a multiple of 2 GPUs',
      ],
    ],
    [
      'the two SLURM variables disagree',
      { visibleDevices: '2,3', gpusOnNode: '4', tensorParallelSize: 2, basePort: 1 },
      'CUDA_VISIBLE_DEVICES',
      [],
      [
        'SLURM_GPUS_ON_NODE=4 but CUDA_VISIBLE_DEVICES lists 2 GPUs (2,3): planning from ' +
          'CUDA_VISIBLE_DEVICES, the GPUs the engines will see',
      ],
    ],
    [
      'no allocation: --gpus-per-node',
      { gpuCount: 3, tensorParallelSize: 2, basePort: 1 },
      'gpus-per-node',
      [2],
      [
        'GPU 2 idle: 3 GPUs (from gpus-per-node) do not divide into slices of tensor parallel ' +
          'size 2; 1 instance uses GPUs 0,1. Use every GPU with a tensor parallel size that ' +
          'divides 3 (1, 3), or nodes with a multiple of 2 GPUs',
      ],
    ],
  ])('%s', (_name, options, source, idle, notes) => {
    const plan = planNodeSlices(options);
    expect(plan.source).toBe(source);
    expect(plan.idle).toEqual(idle);
    expect(plan.notes).toEqual(notes);
    // Every GPU is in exactly one slice or idle.
    expect([...plan.slices.flatMap((slice) => slice.gpus), ...plan.idle]).toEqual(plan.gpus);
  });
});

describe('parseVisibleDevices', () => {
  it('treats unset and blank as unknown and parses lists', () => {
    expect(parseVisibleDevices(undefined)).toBeUndefined();
    expect(parseVisibleDevices('')).toBeUndefined();
    expect(parseVisibleDevices('3,1')).toEqual([3, 1]);
  });
});
