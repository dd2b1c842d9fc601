import { describe, expect, it } from 'vitest';
import { SlicePlanError, parseVisibleDevices, planSlices } from './slices.js';
import type { SlicePlanOptions } from './slices.js';

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
      'a smaller count uses the first visible ids',
      { visibleDevices: '4, 5, 6, 7', gpuCount: 2, tensorParallelSize: 1, basePort: 8001 },
      [
        [[4], 8001],
        [[5], 8002],
      ],
    ],
    [
      'a blank CUDA_VISIBLE_DEVICES falls back to the count',
      { visibleDevices: ' ', gpuCount: 2, tensorParallelSize: 2, basePort: 8001 },
      [[[0, 1], 8001]],
    ],
  ])('%s', (_name, options, expected) => {
    expect(planSlices(options)).toEqual(
      expected.map(([gpus, port], index) => ({ index, gpus, port })),
    );
  });

  it.each<[string, SlicePlanOptions, keyof SlicePlanOptions, RegExp]>([
    [
      'TP not dividing the GPUs',
      { gpuCount: 8, tensorParallelSize: 3, basePort: 8001 },
      'tensorParallelSize',
      /tensor parallel size 3 does not divide the 8 GPUs/,
    ],
    [
      'TP larger than the GPUs',
      { visibleDevices: '0,1', tensorParallelSize: 4, basePort: 8001 },
      'tensorParallelSize',
      /tensor parallel size 4 does not divide the 2 GPUs \(0,1\)/,
    ],
    [
      'TP zero',
      { gpuCount: 8, tensorParallelSize: 0, basePort: 8001 },
      'tensorParallelSize',
      /positive integer, got 0/,
    ],
    [
      'more GPUs asked than visible',
      { visibleDevices: '0,1,2,3', gpuCount: 8, tensorParallelSize: 4, basePort: 8001 },
      'gpuCount',
      /GPUs per node is 8 but only 4 GPUs are visible/,
    ],
    [
      'nothing to plan',
      { tensorParallelSize: 1, basePort: 8001 },
      'gpuCount',
      /CUDA_VISIBLE_DEVICES is not set and no GPU count/,
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

describe('parseVisibleDevices', () => {
  it('treats unset and blank as unknown and parses lists', () => {
    expect(parseVisibleDevices(undefined)).toBeUndefined();
    expect(parseVisibleDevices('')).toBeUndefined();
    expect(parseVisibleDevices('3,1')).toEqual([3, 1]);
  });
});
