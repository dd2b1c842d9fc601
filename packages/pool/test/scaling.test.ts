import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SCALING,
  PoolError,
  decideScale,
  validateDeployment,
  validateScaling,
  type ScaleState,
  type ScalingPolicy,
} from '../src/index.js';
import { deployment } from './helpers.js';

// 2 instances per node × 4 in flight each: 8 requests per node.
const policy: ScalingPolicy = {
  targetInFlight: 4,
  targetKvCacheUsage: 0.9,
  windowMs: 0,
  upDelayMs: 10_000,
  downDelayMs: 60_000,
};

/** Feed `loads` (one per second from t = 0) through decideScale; the targets after each. */
function run(
  loads: (number | { load: number; queued?: number; kv?: number; readyNodes?: number })[],
  opts: { min?: number; max?: number; initial?: number; policy?: Partial<ScalingPolicy> } = {},
) {
  let state: ScaleState | undefined;
  const targets: number[] = [];
  const changes: { at: number; from: number; to: number; why: string }[] = [];
  loads.forEach((entry, i) => {
    const at = i * 1000;
    const e = typeof entry === 'number' ? { load: entry } : entry;
    const d = decideScale({
      now: at,
      minNodes: opts.min ?? 0,
      maxNodes: opts.max ?? 6,
      workersPerNode: 2,
      readyNodes: e.readyNodes ?? 1,
      policy: { ...policy, ...opts.policy },
      state,
      initialTarget: opts.initial ?? 1,
      sample: {
        at,
        load: e.load + (e.queued ?? 0),
        queued: e.queued ?? 0,
        ...(e.kv === undefined ? {} : { kvCacheUsage: e.kv }),
      },
    });
    state = d.state;
    targets.push(d.state.target);
    if (d.change) changes.push({ at, ...d.change });
  });
  return { targets, changes, state: state! };
}

const repeat = (value: number, times: number) => Array<number>(times).fill(value);

describe('decideScale', () => {
  it.each([
    ['the first target is the jobs held, clamped to the bounds', { initial: 9, max: 4 }, [0], 4],
    ['... and never under minNodes', { initial: 0, min: 2 }, [0], 2],
    ['load within the target changes nothing', { initial: 1 }, repeat(8, 120), 1],
    [
      'load above the target raises it after the up delay, to what the load needs',
      { initial: 1 },
      repeat(20, 11),
      3,
    ],
    [
      'a burst shorter than the up delay changes nothing',
      { initial: 1 },
      [...repeat(40, 9), ...repeat(4, 30)],
      1,
    ],
    [
      'up: to the least need seen over the delay (not the peak)',
      { initial: 1 },
      [...repeat(40, 5), ...repeat(20, 6)],
      3,
    ],
    ['the need is capped at maxNodes', { initial: 1, max: 4 }, repeat(1000, 11), 4],
    ['idle for the down delay: down to minNodes', { initial: 3, min: 1 }, repeat(0, 61), 1],
    ['idle for less than the down delay: held', { initial: 3 }, repeat(0, 60), 3],
    [
      'down: to the most need seen over the delay (a quiet minute does not undo a busy one)',
      { initial: 4 },
      [...repeat(17, 30), ...repeat(1, 31)],
      3,
    ],
    ['one request in flight keeps one node', { initial: 2 }, repeat(1, 61), 1],
  ] as const)('%s', (_, opts, loads, expected) => {
    expect(run([...loads], opts).targets.at(-1)).toBe(expected);
  });

  it('scales from zero at once when a request waits, without the up delay', () => {
    const { targets, changes } = run([0, 0, { load: 0, queued: 1 }], { initial: 0 });
    expect(targets).toEqual([0, 0, 1]);
    expect(changes).toEqual([
      { at: 2000, from: 0, to: 1, why: '1 request(s) waiting with no node: scale from zero' },
    ]);
  });

  it('at zero, a burst that needs more than one node gets what it needs at once', () => {
    expect(run([{ load: 0, queued: 30 }], { initial: 0 }).targets).toEqual([4]);
  });

  it('adds nodes when the KV cache is fuller than its target, whatever the request count', () => {
    const loads = repeat(0, 11).map(() => ({ load: 2, kv: 0.95, readyNodes: 2 }));
    // ceil(2 nodes × 0.95 / 0.9) = 3
    expect(run(loads, { initial: 2 }).targets.at(-1)).toBe(3);
    const calm = repeat(0, 11).map(() => ({ load: 2, kv: 0.5, readyNodes: 2 }));
    expect(run(calm, { initial: 2 }).targets.at(-1)).toBe(2);
  });

  it('averages the load over the window: one busy tick among idle ones is not a need', () => {
    const loads = [...repeat(0, 29), 200, ...repeat(0, 20)];
    const averaged = run(loads, { initial: 1, policy: { windowMs: 30_000, upDelayMs: 0 } });
    // 200 for 1 s over a 30 s window is 6.7 on average: one node.
    expect(averaged.changes).toEqual([]);
    const instant = run(loads, { initial: 1, policy: { windowMs: 0, upDelayMs: 0 } });
    expect(instant.changes.map((c) => c.to)).toEqual([6]);
  });

  it('explains each change with its inputs', () => {
    const { changes } = run(repeat(20, 11), { initial: 1 });
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ at: 10_000, from: 1, to: 3 });
    expect(changes[0]!.why).toBe(
      'load 20.0 (window 0 s) for 10 s; target 4 in flight × 2 per node',
    );
  });

  it('follows bounds that moved (an operator lowered maxNodes) at once', () => {
    const first = decideScale({
      now: 0,
      minNodes: 0,
      maxNodes: 6,
      workersPerNode: 2,
      readyNodes: 0,
      policy,
      state: undefined,
      initialTarget: 5,
      sample: { at: 0, load: 40, queued: 0 },
    });
    const second = decideScale({
      ...{ now: 1000, minNodes: 0, maxNodes: 2, workersPerNode: 2, readyNodes: 0, policy },
      state: first.state,
      initialTarget: 0,
      sample: { at: 1000, load: 40, queued: 0 },
    });
    expect(second.state.target).toBe(2);
  });

  it('the defaults are within the anchors the issue names', () => {
    expect(DEFAULT_SCALING.upDelayMs).toBeGreaterThanOrEqual(30_000);
    expect(DEFAULT_SCALING.upDelayMs).toBeLessThanOrEqual(300_000);
    expect(DEFAULT_SCALING.downDelayMs).toBeGreaterThanOrEqual(600_000);
    expect(DEFAULT_SCALING.downDelayMs).toBeLessThanOrEqual(1_200_000);
  });
});

describe('validating the scaling fields', () => {
  it.each([
    [{ targetInFlight: 0 }, 'scaling.targetInFlight'],
    [{ targetKvCacheUsage: 1.5 }, 'scaling.targetKvCacheUsage'],
    [{ upDelayMs: -1 }, 'scaling.upDelayMs'],
    [{ windowMs: Number.NaN }, 'scaling.windowMs'],
  ] as const)('%o is refused, naming %s', (scaling, param) => {
    expect(() => validateScaling(scaling)).toThrow(PoolError);
    expect(() => validateScaling(scaling)).toThrow(param);
  });

  it('minNodes above maxNodes names the field and the fix', () => {
    expect(() => validateDeployment(deployment('m', { maxNodes: 2, minNodes: 3 }))).toThrow(
      /minNodes 3 is more than maxNodes 2: lower it or raise maxNodes/,
    );
    expect(() => validateDeployment(deployment('m', { maxNodes: 2, minNodes: 0 }))).not.toThrow();
  });
});
