import { describe, expect, it } from 'vitest';
import {
  PoolError,
  createReconciler,
  createRegistry,
  type JobState,
  type ListFilter,
  type NodeProvider,
  type NodeRequest,
  type ObservedJob,
  type ReconcilerOptions,
} from '../src/index.js';
import { deployment, manualClock, registration } from './helpers.js';

/** An in-memory cluster: a real NodeProvider whose jobs the test moves between states. */
class MemoryCluster implements NodeProvider {
  readonly kind = 'memory';
  jobs = new Map<string, ObservedJob>();
  requests: NodeRequest[] = [];
  listCalls = 0;
  cancelCalls: string[][] = [];
  /** Called at the start of each cancel (to look at the pool at that moment). */
  onCancel: ((ids: string[]) => void) | undefined;
  listError: Error | undefined;
  /** While set, `list` waits for it: a controller that answers squeue late. */
  listHold: Promise<void> | undefined;
  submitError: (Error & { kind?: string; ambiguous?: boolean }) | undefined;
  cancelError: (Error & { kind?: string }) | undefined;
  releaseCalls: string[][] = [];
  /** A cluster whose policy refuses to lift begin times. */
  releaseError: (Error & { kind?: string }) | undefined;
  private next = 100;

  /** Lifts the begin time: the job waits for a node like any other pending job. */
  async release(ids: string[]): Promise<void> {
    this.releaseCalls.push(ids);
    if (this.releaseError) throw this.releaseError;
    for (const id of ids) {
      const job = this.jobs.get(id);
      if (job?.reason === 'BeginTime') job.reason = 'Resources';
    }
  }

  async submit(request: NodeRequest): Promise<string> {
    if (this.submitError) throw this.submitError;
    const id = String(this.next++);
    this.requests.push(request);
    this.jobs.set(id, {
      id,
      name: request.name,
      tag: request.tag,
      state: 'PENDING',
      reason: 'Priority',
      nodes: '',
      restartCount: 0,
    });
    return id;
  }

  async list(filter: ListFilter): Promise<ObservedJob[]> {
    this.listCalls++;
    await this.listHold;
    if (this.listError) throw this.listError;
    return [...this.jobs.values()]
      .filter((j) => filter.names.includes(j.name))
      .map((j) => ({ ...j }));
  }

  async cancel(ids: string[]): Promise<void> {
    this.onCancel?.(ids);
    this.cancelCalls.push(ids);
    if (this.cancelError) throw this.cancelError;
    for (const id of ids) {
      const job = this.jobs.get(id);
      if (job) job.state = 'CANCELLED';
    }
  }

  set(id: string, state: JobState, extra: Partial<ObservedJob> = {}) {
    Object.assign(
      this.jobs.get(id)!,
      { state, reason: '', nodes: state === 'RUNNING' ? `gpu${id}` : '' },
      extra,
    );
  }
}

function setup(cluster = new MemoryCluster(), extra: Partial<ReconcilerOptions> = {}) {
  const clock = manualClock();
  const registry = createRegistry({
    deployments: [deployment('m', { maxNodes: 2 })],
    now: clock.now,
  });
  const reconciler = createReconciler({
    registry,
    provider: cluster,
    schedulerId: 'test',
    now: clock.now,
    random: () => 0.5,
    buildNodeRequest: (d, tag) => ({
      command: ['worker', '--tag', tag],
      env: { ES_SCHEDULER_URL: 'http://127.0.0.1:1' },
      logDir: '/tmp/logs',
      gpusPerNode: d.gpusPerNode,
    }),
    ...extra,
  });
  return { clock, registry, reconciler, cluster };
}

/** Two jobs submitted and running, each with one ready worker: 100.0.0 and 101.0.0. */
async function twoReadyJobs({ reconciler, cluster, registry }: ReturnType<typeof setup>) {
  await reconciler.tickOnce();
  cluster.set('100', 'RUNNING');
  cluster.set('101', 'RUNNING');
  await reconciler.tickOnce();
  registry.register(registration('100', 0, { state: 'ready' }));
  registry.register(registration('101', 0, { state: 'ready', port: 9100 }));
}

describe('createReconciler', () => {
  it('fills to maxNodes with one list per tick and requests named, tagged and with the env', async () => {
    const { reconciler, cluster, registry } = setup();
    const result = await reconciler.tickOnce();
    expect(result.submitted).toEqual(['100', '101']);
    expect(cluster.listCalls).toBe(1);
    const [request] = cluster.requests;
    expect(request).toMatchObject({
      deployment: 'm',
      name: 'es-test-m',
      gpusPerNode: 8,
      env: { ES_DEPLOYMENT: 'm', ES_SCHEDULER_URL: 'http://127.0.0.1:1' },
    });
    expect(request?.command).toEqual(['worker', '--tag', request?.tag]);
    expect(new Set(cluster.requests.map((r) => r.tag)).size).toBe(2);
    expect(registry.recentEvents().filter((e) => e.type === 'submitted')).toHaveLength(2);
    // Pending jobs count: nothing more.
    expect((await reconciler.tickOnce()).submitted).toEqual([]);
    expect(cluster.listCalls).toBe(2);
  });

  it('runs a worker through the registry and replaces its node when it dies', async () => {
    const world = setup();
    const { reconciler, registry, clock } = world;
    await twoReadyJobs(world);
    expect(registry.routable('m')).toHaveLength(2);
    // Job 101's worker stops heartbeating (SIGKILL): gone after the timeout, job replaced.
    clock.advance(31_000);
    registry.heartbeat('100.0.0', { state: 'ready', restartCount: 0 });
    const result = await reconciler.tickOnce();
    expect(registry.routable('m').map((w) => w.id)).toEqual(['100.0.0']);
    expect(result.cancelled).toEqual(['101']);
    expect(result.submitted).toEqual(['102']);
    const status = reconciler.status().deployments[0]!;
    expect(status.jobs.find((j) => j.jobId === '101')?.cancelReason).toMatch(/all workers gone/);
    expect(registry.recentEvents().map((e) => e.type)).toEqual(
      expect.arrayContaining(['gone', 'cancelled', 'replaced']),
    );
  });

  it('treats a failed list as unknown: nothing cancelled or submitted, serving goes on', async () => {
    const world = setup();
    const { reconciler, cluster, registry, clock } = world;
    await twoReadyJobs(world);
    cluster.listError = new Error('slurm_load_jobs error: Socket timed out on send/recv operation');
    for (let i = 0; i < 5; i++) {
      clock.advance(10_000);
      for (const w of registry.routable('m')) {
        registry.heartbeat(w.id, { state: 'ready', restartCount: 0 });
      }
      const result = await reconciler.tickOnce();
      expect(result).toMatchObject({ listed: false, submitted: [], cancelled: [] });
    }
    expect(registry.routable('m')).toHaveLength(2);
    expect(reconciler.status()).toMatchObject({
      listFailures: 5,
      lastListError: 'slurm_load_jobs error: Socket timed out on send/recv operation',
    });
    cluster.listError = undefined;
    expect((await reconciler.tickOnce()).submitted).toEqual([]);
    expect(reconciler.status().listFailures).toBe(0);
  });

  it('stops submitting after a permanent failure and shows the reason in status', async () => {
    const { reconciler, cluster, clock } = setup();
    cluster.submitError = Object.assign(
      new Error('sbatch: error: invalid partition name specified'),
      {
        kind: 'permanent',
      },
    );
    let attempts = 0;
    const original = cluster.submit.bind(cluster);
    cluster.submit = (r) => {
      attempts++;
      return original(r);
    };
    for (let i = 0; i < 10; i++) {
      await reconciler.tickOnce();
      clock.advance(60_000);
    }
    // The second planned submission of the first tick is abandoned once the first failed.
    expect(attempts).toBe(1);
    const status = reconciler.status().deployments[0]!;
    expect(status.permanentError).toBe('sbatch: error: invalid partition name specified');
    expect(status.lastErrors).toHaveLength(1);
    cluster.submitError = undefined;
    reconciler.resume('m');
    expect((await reconciler.tickOnce()).submitted).toHaveLength(2);
  });

  it('a restarted scheduler adopts running and pending jobs and submits nothing', async () => {
    const cluster = new MemoryCluster();
    const first = setup(cluster);
    await first.reconciler.tickOnce();
    cluster.set('100', 'RUNNING');
    const second = setup(cluster);
    const result = await second.reconciler.tickOnce();
    expect(result.submitted).toEqual([]);
    expect(second.registry.recentEvents().filter((e) => e.type === 'adopted')).toHaveLength(2);
    // Its worker answers the next heartbeat's 404 by registering again, ready at once.
    second.registry.register(registration('100', 0, { state: 'ready' }));
    expect(second.registry.routable('m')).toHaveLength(1);
    expect(
      second.reconciler
        .status()
        .deployments[0]!.jobs.map((j) => j.state)
        .sort(),
    ).toEqual(['PENDING', 'RUNNING']);
  });

  it('keeps serving through a worker started by hand, without counting, cancelling or fencing it', async () => {
    const { reconciler, cluster, registry, clock } = setup();
    // A manual job (sbatch scripts/launch-worker.slurm): another job name, never listed.
    registry.register(registration('7000', 0, { state: 'ready', port: 9200 }));
    expect((await reconciler.tickOnce()).submitted).toEqual(['100', '101']);
    cluster.set('100', 'RUNNING');
    cluster.set('101', 'RUNNING');
    registry.register(registration('100', 0, { state: 'ready' }));
    registry.register(registration('101', 0, { state: 'ready', port: 9100 }));
    for (let i = 0; i < 18; i++) {
      clock.advance(10_000);
      for (const id of ['7000.0.0', '100.0.0', '101.0.0']) {
        registry.heartbeat(id, { state: 'ready', restartCount: 0 });
      }
      const result = await reconciler.tickOnce();
      expect(result).toMatchObject({ submitted: [], cancelled: [] });
    }
    expect(registry.routable('m').map((w) => w.id)).toContain('7000.0.0');
    expect(cluster.cancelCalls).toEqual([]);
    // Silent: out of routing by the heartbeat timeout, still never cancelled.
    clock.advance(31_000);
    registry.heartbeat('100.0.0', { state: 'ready', restartCount: 0 });
    registry.heartbeat('101.0.0', { state: 'ready', restartCount: 0 });
    const result = await reconciler.tickOnce();
    expect(result).toMatchObject({ submitted: [], cancelled: [] });
    expect(
      registry
        .routable('m')
        .map((w) => w.id)
        .sort(),
    ).toEqual(['100.0.0', '101.0.0']);
    expect(cluster.cancelCalls).toEqual([]);
  });

  it('asks for a replacement as soon as a worker drains, not at the next regular tick', async () => {
    const cluster = new MemoryCluster();
    const registry = createRegistry({
      deployments: [deployment('m', { maxNodes: 1, cluster: { requeue: false } })],
    });
    const reconciler = createReconciler({
      registry,
      provider: cluster,
      schedulerId: 'test',
      intervalMs: 3_600_000,
      minTickGapMs: 0,
      buildNodeRequest: () => ({ command: ['w'], env: {}, logDir: '/tmp' }),
    });
    reconciler.start();
    try {
      await expect.poll(() => cluster.requests.length).toBe(1);
      cluster.set('100', 'RUNNING');
      await reconciler.tickOnce();
      const { workerId } = registry.register(registration('100', 0, { state: 'ready' }));
      registry.drain(workerId, 'SIGTERM');
      expect(registry.routable('m')).toHaveLength(0);
      await expect.poll(() => cluster.requests.length, { timeout: 2000 }).toBe(2);
    } finally {
      await reconciler.stop();
    }
    expect(reconciler.status().running).toBe(false);
  });

  it('takes a silent worker out of routing on time while the tick waits for a slow list', async () => {
    const world = setup(undefined, {
      intervalMs: 3_600_000,
      heartbeatTimeoutMs: 4_000,
      livenessIntervalMs: 10,
    });
    const { reconciler, cluster, registry, clock } = world;
    await twoReadyJobs(world);
    let answer = () => {};
    cluster.listHold = new Promise((resolve) => (answer = resolve));
    reconciler.start();
    try {
      await expect.poll(() => cluster.listCalls).toBe(3);
      // Worker 101 hangs (SIGSTOP); the tick in progress still waits for squeue.
      clock.advance(4_001);
      registry.heartbeat('100.0.0', { state: 'ready', restartCount: 0 });
      await expect
        .poll(() => registry.routable('m').map((w) => w.id), { timeout: 1000 })
        .toEqual(['100.0.0']);
      expect(registry.worker('101.0.0')).toMatchObject({
        state: 'gone',
        reason: 'no heartbeat for 4 s',
      });
      expect(cluster.listCalls).toBe(3);
      expect(cluster.cancelCalls).toEqual([]);
      // The list answers: that very tick cancels the hung worker's job and replaces it.
      answer();
      await expect.poll(() => cluster.cancelCalls).toEqual([['101']]);
      await expect.poll(() => cluster.requests.length).toBe(3);
    } finally {
      await reconciler.stop();
    }
  });

  it('cancelAll cancels every live job in one call', async () => {
    const { reconciler, cluster } = setup();
    await reconciler.tickOnce();
    cluster.set('101', 'COMPLETED');
    expect(await reconciler.cancelAll()).toEqual(['100']);
    expect(cluster.cancelCalls).toEqual([['100']]);
  });
});

describe('the reconciler as the pool operator', () => {
  /** The PoolError `run` throws (fails the test when it does not throw one). */
  async function refusal(run: () => unknown): Promise<PoolError> {
    try {
      await run();
    } catch (error) {
      expect(error).toBeInstanceOf(PoolError);
      return error as PoolError;
    }
    throw new Error('no refusal');
  }

  it('releases a requeued job from its begin time in one call and says so in the events', async () => {
    const world = setup();
    await twoReadyJobs(world);
    const { cluster, reconciler, registry } = world;
    cluster.set('101', 'PENDING', { reason: 'BeginTime', restartCount: 1 });
    await reconciler.tickOnce();
    expect(cluster.releaseCalls).toEqual([['101']]);
    expect(cluster.requests).toHaveLength(2);
    expect(registry.recentEvents().find((e) => e.type === 'released')).toMatchObject({
      deployment: 'm',
      jobId: '101',
      reason: 'requeue begin time lifted: it starts as soon as a node is free',
    });
    const status = () => reconciler.status().deployments[0]?.jobs.find((j) => j.jobId === '101');
    expect(status()).toMatchObject({ reason: 'BeginTime', releasedAt: expect.any(Number) });
    // The next list shows it waiting for a node, still released, and it is not released again.
    await reconciler.tickOnce();
    expect(status()).toMatchObject({ reason: 'Resources', releasedAt: expect.any(Number) });
    expect(cluster.releaseCalls).toEqual([['101']]);
  });

  it('replaces a job whose release was refused, but only once its cancel succeeded', async () => {
    const world = setup();
    await twoReadyJobs(world);
    const { cluster, reconciler, clock } = world;
    cluster.releaseError = Object.assign(new Error('scontrol failed: Access/permission denied'), {
      kind: 'permanent',
    });
    cluster.set('101', 'PENDING', { reason: 'BeginTime', restartCount: 1 });
    await reconciler.tickOnce();
    expect(cluster.releaseCalls).toEqual([['101']]);
    expect(reconciler.status().deployments[0]?.lastErrors.at(-1)).toMatchObject({
      action: 'release',
      message: 'scontrol failed: Access/permission denied',
    });
    // The cancel fails: no replacement while the refused job may still start.
    cluster.cancelError = Object.assign(new Error('scancel: Unable to contact slurm controller'), {
      kind: 'transient',
    });
    clock.advance(1_000);
    await reconciler.tickOnce();
    expect(cluster.cancelCalls).toEqual([['101']]);
    expect(cluster.requests).toHaveLength(2);
    // The next tick cancels again, and now that it worked, replaces it.
    cluster.cancelError = undefined;
    clock.advance(1_000);
    await reconciler.tickOnce();
    expect(cluster.cancelCalls).toEqual([['101'], ['101']]);
    expect(cluster.requests).toHaveLength(3);
  });

  it('setMaxNodes refuses an unknown deployment and a maxNodes that is not an integer >= 0', async () => {
    const { reconciler, cluster } = setup();
    expect(await refusal(() => reconciler.setMaxNodes('nope', 1))).toMatchObject({
      code: 'unknown_deployment',
      status: 404,
      message: 'deployment nope is not served here',
      param: 'deployment',
    });
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(await refusal(() => reconciler.setMaxNodes('m', bad))).toMatchObject({
        code: 'invalid_request',
        status: 400,
        message: `maxNodes must be an integer >= 0, got ${String(bad)}`,
        param: 'maxNodes',
      });
    }
    expect(cluster.listCalls).toBe(0);
  });

  it('setMaxNodes lowers at once: the surplus leaves routing, then is cancelled, and is not replaced', async () => {
    const world = setup();
    const { reconciler, cluster, registry } = world;
    await twoReadyJobs(world);
    let routableAtCancel: string[] = [];
    cluster.onCancel = () => (routableAtCancel = registry.routable('m').map((w) => w.id));
    const result = await reconciler.setMaxNodes('m', 1);
    expect(result).toEqual({
      deployment: 'm',
      previousMaxNodes: 2,
      maxNodes: 1,
      cancelled: ['100'],
    });
    expect(cluster.cancelCalls).toEqual([['100']]);
    // The invariant, checked in the cancel itself: 100's worker was out of routing already.
    expect(routableAtCancel).toEqual(['101.0.0']);
    expect(registry.worker('100.0.0')).toMatchObject({
      state: 'draining',
      reason: 'more than maxNodes 1',
    });
    expect(registry.deploymentConfig('m')?.maxNodes).toBe(1);
    expect(reconciler.status().deployments[0]?.maxNodes).toBe(1);
    expect((await reconciler.tickOnce()).submitted).toEqual([]);
    // Raising submits in the tick the call runs.
    const up = await reconciler.setMaxNodes('m', 3);
    expect(up).toEqual({ deployment: 'm', previousMaxNodes: 1, maxNodes: 3, cancelled: [] });
    expect(cluster.requests).toHaveLength(4);
  });

  it('setMaxNodes counts the cancels of a tick in progress, then runs a fresh one', async () => {
    const world = setup();
    const { reconciler, cluster } = world;
    await twoReadyJobs(world);
    let answer = () => {};
    cluster.listHold = new Promise((resolve) => (answer = resolve));
    const inProgress = reconciler.tickOnce();
    const scaled = reconciler.setMaxNodes('m', 1);
    await expect.poll(() => cluster.listCalls).toBe(3);
    cluster.listHold = undefined;
    answer();
    await inProgress;
    expect(await scaled).toMatchObject({ cancelled: ['100'] });
    expect(cluster.cancelCalls).toEqual([['100']]);
    expect(cluster.listCalls).toBe(4);
  });

  it('drainWorker takes one worker out of routing; an unknown or gone one is refused', async () => {
    const world = setup();
    const { reconciler, registry } = world;
    await twoReadyJobs(world);
    expect(reconciler.drainWorker('100.0.0')).toEqual({ drained: ['100.0.0'] });
    expect(registry.worker('100.0.0')).toMatchObject({
      state: 'draining',
      reason: 'drained by an operator',
    });
    expect(registry.routable('m').map((w) => w.id)).toEqual(['101.0.0']);
    // Again: still draining, same answer.
    expect(reconciler.drainWorker('100.0.0')).toEqual({ drained: ['100.0.0'] });
    expect(await refusal(() => reconciler.drainWorker('9.0.0'))).toMatchObject({
      code: 'unknown_worker',
      status: 404,
      message: 'worker 9.0.0 is not registered',
    });
    registry.deregister('101.0.0', 'exit');
    expect(await refusal(() => reconciler.drainWorker('101.0.0'))).toMatchObject({
      code: 'unknown_worker',
    });
  });

  it('drainJob drains at once, cancels once in-flight requests finish, and the job is replaced', async () => {
    const world = setup(undefined, {
      intervalMs: 3_600_000,
      minTickGapMs: 0,
      livenessIntervalMs: 10,
    });
    const { reconciler, cluster, registry } = world;
    await twoReadyJobs(world);
    expect(await refusal(() => reconciler.drainJob('999'))).toMatchObject({
      code: 'unknown_job',
      status: 404,
      message: 'job 999 has no registered worker here',
    });
    // A request in flight on 101's worker (the object the proxy holds).
    const held = registry.routable('m').find((w) => w.id === '101.0.0')!;
    held.inFlight = 1;
    reconciler.start();
    try {
      await expect.poll(() => cluster.listCalls).toBe(3);
      expect(reconciler.drainJob('101')).toEqual({ drained: ['101.0.0'], jobId: '101' });
      expect(registry.routable('m').map((w) => w.id)).toEqual(['100.0.0']);
      await new Promise((r) => setTimeout(r, 100));
      expect(cluster.cancelCalls).toEqual([]);
      held.inFlight = 0;
      await expect.poll(() => cluster.cancelCalls).toEqual([['101']]);
      await expect.poll(() => cluster.requests.length).toBe(3);
    } finally {
      await reconciler.stop();
    }
    const cancelled = registry.recentEvents().find((e) => e.type === 'cancelled');
    expect(cancelled).toMatchObject({ jobId: '101', reason: 'drained by an operator' });
    expect(registry.recentEvents().find((e) => e.type === 'replaced')).toMatchObject({
      jobId: '101',
    });
  });

  it('drainJob cancels after the grace even with requests still in flight', async () => {
    const world = setup(undefined, { jobDrainGraceMs: 5_000 });
    const { reconciler, cluster, registry, clock } = world;
    await twoReadyJobs(world);
    registry.routable('m').find((w) => w.id === '101.0.0')!.inFlight = 1;
    reconciler.drainJob('101');
    clock.advance(5_000);
    for (const id of ['100.0.0', '101.0.0'])
      registry.heartbeat(id, { state: 'ready', restartCount: 0 });
    expect((await reconciler.tickOnce()).cancelled).toEqual([]);
    clock.advance(1);
    expect((await reconciler.tickOnce()).cancelled).toEqual(['101']);
    expect(cluster.cancelCalls).toEqual([['101']]);
  });

  it('resume refuses an unknown deployment', async () => {
    const { reconciler } = setup();
    expect(await refusal(() => reconciler.resume('nope'))).toMatchObject({
      code: 'unknown_deployment',
    });
  });
});

describe('the liveness check', () => {
  it('copies only the silent workers, every time it runs', async () => {
    const world = setup(undefined, {
      intervalMs: 3_600_000,
      heartbeatTimeoutMs: 4_000,
      livenessIntervalMs: 10,
    });
    const { reconciler, registry, clock } = world;
    await twoReadyJobs(world);
    let all = 0;
    let silent = 0;
    const workers = registry.workers.bind(registry);
    const silentWorkers = registry.silentWorkers.bind(registry);
    registry.workers = (d) => {
      all++;
      return workers(d);
    };
    registry.silentWorkers = (before) => {
      const found = silentWorkers(before);
      silent += found.length;
      return found;
    };
    reconciler.start();
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(silent).toBe(0);
      clock.advance(4_001);
      registry.heartbeat('100.0.0', { state: 'ready', restartCount: 0 });
      await expect.poll(() => registry.worker('101.0.0')?.state).toBe('gone');
      expect(silent).toBe(1);
      expect(all).toBe(0);
    } finally {
      await reconciler.stop();
    }
  });

  it('applies the heartbeats another thread holds before it judges anyone silent', async () => {
    // Pending: heartbeats a worker API thread answered that this thread has not handled yet.
    const pending: string[] = [];
    const world = setup(undefined, {
      intervalMs: 3_600_000,
      heartbeatTimeoutMs: 4_000,
      livenessIntervalMs: 10,
      receivePendingHeartbeats: () => {
        for (const id of pending.splice(0)) {
          world.registry.heartbeat(id, { state: 'ready', restartCount: 0 });
        }
      },
    });
    const { reconciler, registry, clock } = world;
    await twoReadyJobs(world);
    reconciler.start();
    try {
      clock.advance(4_001);
      // 100's heartbeat came in time (it is pending); 101's did not.
      pending.push('100.0.0');
      await expect.poll(() => registry.worker('101.0.0')?.state).toBe('gone');
      expect(registry.worker('100.0.0')?.state).toBe('ready');
      expect(pending).toEqual([]);
    } finally {
      await reconciler.stop();
    }
  });
});
