import type { RoutableWorker } from '@es/pool';
import { describe, expect, it } from 'vitest';
import { createRetryBudget } from '../src/retry-budget.js';
import { createDeploymentRouter, pickLeastOutstanding } from '../src/routing.js';
import { UsageTail } from '../src/usage.js';

const workers = (n: number, inFlight: number[] = []): RoutableWorker[] =>
  Array.from({ length: n }, (_, i) => ({
    id: `job${i}.0.0`,
    deployment: 'd',
    baseUrl: `http://10.0.0.${i}:8000`,
    inFlight: inFlight[i] ?? 0,
  }));

describe('least outstanding, power of two choices', () => {
  it('never picks the busiest of three and spreads a burst evenly', () => {
    const pool = workers(3, [0, 5, 9]);
    for (let i = 0; i < 200; i++) expect(pickLeastOutstanding(pool)!.id).not.toBe('job2.0.0');
    const even = workers(4);
    for (let i = 0; i < 400; i++) pickLeastOutstanding(even)!.inFlight++;
    const counts = even.map((w) => w.inFlight);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(5);
  });

  it('breaks in-flight ties with the engine-reported load', () => {
    const [a, b] = workers(2);
    a!.load = { running: 8, waiting: 4 };
    b!.load = { running: 1, waiting: 0 };
    for (let i = 0; i < 20; i++) expect(pickLeastOutstanding([a!, b!])).toBe(b);
  });

  it('skips excluded workers (retries)', () => {
    const router = createDeploymentRouter(1.25);
    const pool = workers(2);
    for (let i = 0; i < 20; i++) {
      expect(router.pick('least-outstanding', pool, undefined, new Set(['job0.0.0']))!.id).toBe(
        'job1.0.0',
      );
    }
    expect(router.pick('least-outstanding', pool, undefined, new Set(pool.map((w) => w.id)))).toBe(
      undefined,
    );
  });
});

describe('round robin', () => {
  it('cycles through the workers', () => {
    const router = createDeploymentRouter(1.25);
    const pool = workers(3);
    const ids = Array.from(
      { length: 6 },
      () => router.pick('round-robin', pool, undefined, undefined)!.id,
    );
    expect(new Set(ids.slice(0, 3)).size).toBe(3);
    expect(ids.slice(3)).toEqual(ids.slice(0, 3));
  });
});

describe('prefix affinity (consistent hashing with bounded loads)', () => {
  const keys = Array.from({ length: 500 }, (_, i) => `system prompt ${i}`);

  it('sends a key to the same worker, and a leaving worker moves only its own keys', () => {
    const router = createDeploymentRouter(1.25);
    const pool = workers(5);
    const before = new Map(
      keys.map((k) => [k, router.pick('prefix-affinity', pool, k, undefined)!.id]),
    );
    for (const k of keys)
      expect(router.pick('prefix-affinity', pool, k, undefined)!.id).toBe(before.get(k));
    const owners = new Set(before.values());
    expect(owners.size).toBe(5);
    const remaining = pool.filter((w) => w.id !== 'job2.0.0');
    for (const k of keys) {
      const now = router.pick('prefix-affinity', remaining, k, undefined)!.id;
      if (before.get(k) !== 'job2.0.0') expect(now).toBe(before.get(k));
      else expect(now).not.toBe('job2.0.0');
    }
  });

  it('spills a hot key to another worker once its owner is over the load bound', () => {
    const router = createDeploymentRouter(1.25);
    const pool = workers(4);
    const owner = router.pick('prefix-affinity', pool, 'hot', undefined)!;
    owner.inFlight = 10;
    const other = router.pick('prefix-affinity', pool, 'hot', undefined)!;
    expect(other.id).not.toBe(owner.id);
    owner.inFlight = 0;
    expect(router.pick('prefix-affinity', pool, 'hot', undefined)!.id).toBe(owner.id);
  });

  it('falls back to least outstanding without a key', () => {
    const router = createDeploymentRouter(1.25);
    const pool = workers(2, [4, 0]);
    expect(router.pick('prefix-affinity', pool, undefined, undefined)!.id).toBe('job1.0.0');
  });
});

describe('retry budget', () => {
  it('allows the floor plus a ratio of recent requests, and recovers as the window moves', () => {
    let now = 0;
    const budget = createRetryBudget(0.1, 1, () => now);
    // Floor: 1/s over 10 s = 10 retries.
    for (let i = 0; i < 10; i++) expect(budget.tryRetry()).toBe(true);
    expect(budget.tryRetry()).toBe(false);
    for (let i = 0; i < 100; i++) budget.recordRequest();
    for (let i = 0; i < 10; i++) expect(budget.tryRetry()).toBe(true);
    expect(budget.tryRetry()).toBe(false);
    now += 11_000;
    expect(budget.tryRetry()).toBe(true);
  });
});

describe('usage accounting', () => {
  it('reads usage from the end of a stream split across chunks, and ignores bodies without it', () => {
    const tail = new UsageTail();
    for (let i = 0; i < 200; i++)
      tail.push(Buffer.from('data: {"choices":[{"delta":{"content":"x"}}]}\n\n'));
    tail.push(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":12,"compl'));
    tail.push(Buffer.from('etion_tokens":34,"total_tokens":46}}\n\ndata: [DONE]\n\n'));
    expect(tail.read()).toEqual({ promptTokens: 12, completionTokens: 34, totalTokens: 46 });
    const none = new UsageTail();
    none.push(Buffer.from('{"object":"list","data":[]}'));
    expect(none.read()).toBeUndefined();
  });
});
