import { describe, expect, it } from 'vitest';
import {
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
  listError: Error | undefined;
  /** While set, `list` waits for it: a controller that answers squeue late. */
  listHold: Promise<void> | undefined;
  submitError: (Error & { kind?: string; ambiguous?: boolean }) | undefined;
  private next = 100;

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
    this.cancelCalls.push(ids);
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
