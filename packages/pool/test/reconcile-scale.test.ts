import { describe, expect, it } from 'vitest';
import { loadSample, scaleDownOrder, type TrackedJob } from '../src/reconcile/index.js';
import { instancesPerNode } from '../src/reconcile/scale.js';
import { deployment } from './helpers.js';
import {
  World,
  cancels,
  events,
  job,
  ofType,
  options,
  submits,
  worker,
} from './reconcile-world.js';

// 2 instances per node (TP 4 of 8 GPUs) × 4 in flight: 8 requests per node.
const scaling = { targetInFlight: 4, windowMs: 0, upDelayMs: 10_000, downDelayMs: 60_000 };

/** A deployment that scales between `minNodes` and 3, holding `running` ready jobs. */
function scalingWorld(minNodes: number, running: number): World {
  const w = new World();
  w.deployments = [deployment('m', { maxNodes: 3, minNodes, scaling })];
  for (let i = 1; i <= running; i++) {
    w.jobs.push(job(String(i), 'RUNNING'));
    w.workers.push(worker(String(i), 0, 'ready'), worker(String(i), 1, 'ready'));
  }
  return w;
}

const scaledEvents = (actions: ReturnType<World['tick']>) =>
  ofType(actions, 'event').filter((e) => e.event.type === 'scaled');

/** Settle the submissions as new pending jobs of the list. */
function submitted(w: World, actions: ReturnType<World['tick']>, firstId: number): void {
  w.settle(actions, (_, i) => String(firstId + i));
  submits(actions).forEach((s, i) => {
    w.jobs.push(job(String(firstId + i), 'PENDING', { tag: s.tag }));
  });
}

describe('planReconcile: demand-aware scaling', () => {
  it('a deployment that does not scale (no minNodes) holds maxNodes and has no scale state', () => {
    const w = new World();
    const actions = w.tick();
    expect(submits(actions)).toHaveLength(2); // maxSubmitsPerTick
    expect(w.state.scaling).toEqual({});
    expect(scaledEvents(actions)).toEqual([]);
  });

  it('at zero with nothing waiting, nothing is submitted', () => {
    const w = scalingWorld(0, 0);
    for (let i = 0; i < 5; i++) {
      expect(submits(w.tick())).toEqual([]);
      w.now += 5_000;
    }
    expect(w.state.scaling.m?.target).toBe(0);
  });

  it('a request waiting at zero submits one job at once, with a scaled event', () => {
    const w = scalingWorld(0, 0);
    w.tick();
    w.now += 1_000;
    w.queued = { m: 1 };
    const actions = w.tick();
    expect(submits(actions)).toHaveLength(1);
    expect(scaledEvents(actions)).toEqual([
      {
        type: 'event',
        event: {
          type: 'scaled',
          deployment: 'm',
          reason: '0 → 1 node: 1 request(s) waiting with no node: scale from zero',
        },
      },
    ]);
  });

  it('load above the target submits more after the up delay, never past maxNodes', () => {
    const w = scalingWorld(1, 1);
    w.tick();
    w.workers[0]!.inFlight = 20;
    w.workers[1]!.inFlight = 20; // 40 in flight: 5 nodes' worth, capped at 3
    const seen: number[] = [];
    for (let t = 0; t <= 10; t++) {
      w.now += 1_000;
      seen.push(submits(w.tick()).length);
    }
    expect(seen.slice(0, 9)).toEqual(Array<number>(9).fill(0));
    expect(seen.reduce((a, b) => a + b, 0)).toBe(2);
    expect(w.state.scaling.m?.target).toBe(3);
  });

  it('going idle drains down after the idle delay: pending jobs cancelled first, running ones drained then cancelled when idle, none replaced', () => {
    const w = scalingWorld(0, 2);
    w.jobs.push(job('3', 'PENDING'));
    w.workers[0]!.inFlight = 1; // job 1 still has a request in flight
    w.tick();
    expect(w.state.scaling.m?.target).toBe(3);
    let actions: ReturnType<World['tick']> = [];
    for (let t = 0; t < 61; t++) {
      w.now += 1_000;
      w.heartbeat();
      actions = w.drain(w.tick());
      if (scaledEvents(actions).length > 0) break;
    }
    // The need over the idle delay was one node (one request in flight): 3 → 1.
    expect(scaledEvents(actions)[0]?.event.reason).toMatch(/^3 → 1 node: load 1\.0/);
    expect(cancels(actions).flatMap((c) => c.jobs.map((j) => j.jobId))).toEqual(['3']);
    // Job 2 (idle) is drained, job 1 (a request in flight) is kept.
    expect(ofType(actions, 'drain-job').map((d) => d.jobId)).toEqual(['2']);
    expect(submits(actions)).toEqual([]);
    w.jobs = w.jobs.filter((j) => j.id !== '3');
    w.now += 1_000;
    w.heartbeat();
    actions = w.tick();
    expect(cancels(actions).flatMap((c) => c.jobs.map((j) => j.jobId))).toEqual(['2']);
    expect(cancels(actions)[0]!.jobs[0]!.reason).toBe('scaled down to 1 node');
    expect(submits(actions)).toEqual([]);
    w.jobs = w.jobs.filter((j) => j.id !== '2');
    for (let t = 0; t < 5; t++) {
      w.now += 1_000;
      w.heartbeat();
      expect(submits(w.tick())).toEqual([]);
    }
  });

  it('a drained job waits for its requests (up to the job drain grace) before its cancel', () => {
    const w = scalingWorld(0, 1);
    w.tick();
    w.now += 61_000;
    w.heartbeat();
    w.workers[0]!.inFlight = 0;
    // Idle for the delay (the sample of this tick is 0) but a request arrives as it drains.
    let actions = w.drain(w.tick());
    expect(ofType(actions, 'drain-job').map((d) => d.jobId)).toEqual(['1']);
    w.workers[0]!.inFlight = 1;
    w.now += 1_000;
    w.heartbeat();
    actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    w.now += options.jobDrainGraceMs;
    w.heartbeat();
    actions = w.tick();
    expect(cancels(actions).flatMap((c) => c.jobs.map((j) => j.jobId))).toEqual(['1']);
  });

  it('demand back while a job drains for a lower target: the draining job still counts toward maxNodes', () => {
    const w = scalingWorld(0, 3);
    w.workers[0]!.inFlight = 1;
    w.tick();
    w.now += 61_000;
    w.heartbeat();
    const drained = w.drain(w.tick());
    expect(ofType(drained, 'drain-job')).toHaveLength(2);
    // A burst: every node needed again, while the two drained jobs still run.
    // The drained jobs still finish a request each, so their cancel waits (jobDrainGraceMs).
    for (const x of w.workers) x.inFlight = x.state === 'ready' ? 100 : 1;
    // What the cluster holds: listed jobs not cancelled (a cancel takes them off the list)
    // and submissions not listed yet.
    const held = (): number =>
      w.jobs.length +
      Object.values(w.state.submissions).filter((s) => !w.jobs.some((j) => j.tag === s.tag)).length;
    for (let t = 0; t < 75; t++) {
      w.now += 1_000;
      w.heartbeat();
      const actions = w.tick();
      const cancelled = new Set(cancels(actions).flatMap((c) => c.jobs.map((j) => j.jobId)));
      w.jobs = w.jobs.filter((j) => !cancelled.has(j.id));
      submitted(w, actions, 100 + t * 10);
      expect(held()).toBeLessThanOrEqual(3);
    }
    // The burst got its nodes back once the drained jobs were gone.
    expect(w.state.scaling.m?.target).toBe(3);
    expect(w.jobs).toHaveLength(3);
  });

  it('after a scheduler restart the target starts at the jobs it adopts', () => {
    const w = scalingWorld(0, 2);
    w.tick();
    expect(w.state.scaling.m?.target).toBe(2);
    expect(submits(w.tick())).toEqual([]);
  });

  it('a deployment that stops scaling forgets its state and fills to maxNodes', () => {
    const w = scalingWorld(0, 1);
    w.tick();
    w.deployments = [deployment('m', { maxNodes: 3 })];
    w.now += 1_000;
    const actions = w.tick();
    expect(w.state.scaling).toEqual({});
    expect(submits(actions)).toHaveLength(2);
    expect(events(actions)).not.toContain('scaled');
  });
});

describe('loadSample', () => {
  it('counts per worker the larger of the proxies and the engine, plus the queue; KV of the ready ones', () => {
    const sample = loadSample(
      [
        worker('1', 0, 'ready', {
          inFlight: 3,
          load: { running: 5, waiting: 2, kvCacheUsage: 0.5 },
        }),
        worker('1', 1, 'ready', {
          inFlight: 4,
          load: { running: 1, waiting: 0, kvCacheUsage: 0.7 },
        }),
        worker('2', 0, 'draining', { inFlight: 2 }),
        worker('3', 0, 'loading', { inFlight: 9 }),
        worker('4', 0, 'gone', { inFlight: 9 }),
      ],
      5,
      1234,
    );
    expect(sample).toEqual({
      at: 1234,
      load: 7 + 4 + 2 + 5,
      queued: 5,
      readyNodes: 1,
      kvCacheUsage: 0.6,
    });
  });
});

describe('instancesPerNode', () => {
  it('counts the workers a job registered (its allocation), else gpusPerNode / TP', () => {
    const d = deployment('m', { gpusPerNode: 8, tensorParallelSize: 4 });
    expect(instancesPerNode([], d)).toBe(2);
    const four = [0, 1, 2, 3].map((i) => worker('1', i, 'ready'));
    expect(instancesPerNode([...four, worker('2', 0, 'loading')], d)).toBe(4);
    expect(instancesPerNode([worker('1', 0, 'gone'), worker('1', 1, 'failed')], d)).toBe(2);
  });
});

describe('scaleDownOrder', () => {
  const t = (jobId: string, extra: Partial<TrackedJob>): TrackedJob =>
    ({ jobId, firstSeen: 0, ...extra }) as TrackedJob;
  it('fewest in flight, then least time left, then youngest', () => {
    const inFlight: Record<string, number> = { a: 2, b: 0, c: 0, d: 0, e: 0 };
    const jobs = [
      t('a', { runningSince: 50 }),
      t('b', { runningSince: 10, timeLeftSeconds: 600 }),
      t('c', { runningSince: 20, timeLeftSeconds: 60 }),
      t('d', { runningSince: 30 }),
      t('e', { runningSince: 40 }),
    ];
    const order = [...jobs].sort((x, y) => scaleDownOrder(x, y, (j) => inFlight[j.jobId]!));
    expect(order.map((j) => j.jobId)).toEqual(['c', 'b', 'e', 'd', 'a']);
  });
});
