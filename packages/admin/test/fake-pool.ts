/**
 * A pool in memory for the admin's tests: the three roles the admin takes (`PoolOperator`,
 * `PoolReadModel`, `PoolEventFeed`), with deployments, jobs and workers the test moves
 * around. The operator refuses what the real one refuses, with the same `PoolError` codes;
 * what a command does to the cluster is the reconciler's business and is tested in
 * `@es/pool` and end to end in `apps/scheduler/test`.
 */
import {
  PoolError,
  type DeploymentStatus,
  type DrainResult,
  type JobStatus,
  type PoolEvent,
  type PoolEventFeed,
  type PoolEventListener,
  type PoolOperator,
  type PoolReadModel,
  type ReconcilerStatus,
  type ScaleResult,
  type WorkerInfo,
  type WorkerState,
} from '@es/pool';

// The shared Prometheus-text reader of the tests (@es/admin does not depend on @es/testkit).
export { metric } from '../../testkit/src/index.js';

/** A job of the fake pool (what `status()` shows of it is derived). */
export interface FakeJob {
  jobId: string;
  deployment: string;
  state: string;
  reason: string;
  nodes: string;
  restartCount: number;
  firstSeen: number;
  timeLeftSeconds?: number;
  cancelReason?: string;
  endedAt?: number;
}

/** The fake pool: its roles, its contents, and what the operator was asked. */
export interface FakePool {
  operator: PoolOperator;
  readModel: PoolReadModel;
  events: PoolEventFeed;
  /** Every operator call, as `name(args)`. */
  calls: string[];
  deployments: Map<
    string,
    {
      maxNodes: number;
      lastErrors: DeploymentStatus['lastErrors'];
      scaling?: DeploymentStatus['scaling'];
    }
  >;
  jobs: FakeJob[];
  workers: WorkerInfo[];
  /** What `setMaxNodes` answers as cancelled (the reconciler decides in the real pool). */
  cancelOnScale: string[];
  /** Record an event (the registry's `emit`). */
  emit(event: Omit<PoolEvent, 'at'> & { at?: number }): void;
  /** Add a job with `workers` workers in `state` (ids `<jobId>.0.<i>`). */
  addJob(jobId: string, workers: number, state?: WorkerState, extra?: Partial<FakeJob>): void;
  /** Move every worker of a job to `state`. */
  setWorkers(jobId: string, state: WorkerState, reason?: string): void;
}

/** Create a fake pool serving `deployment` (max nodes 2) at the clock `now`. */
export function createFakePool(
  now: () => number = () => Date.now(),
  deployment = 'mock',
): FakePool {
  const listeners = new Set<PoolEventListener>();
  const ring: PoolEvent[] = [];
  const pool: FakePool = {
    calls: [],
    deployments: new Map([[deployment, { maxNodes: 2, lastErrors: [] }]]),
    jobs: [],
    workers: [],
    cancelOnScale: [],
    emit(input) {
      const event: PoolEvent = { ...input, at: input.at ?? now() };
      ring.push(event);
      for (const listener of listeners) listener(event);
    },
    addJob(jobId, count, state = 'ready', extra = {}) {
      pool.jobs.push({
        jobId,
        deployment,
        state: 'RUNNING',
        reason: '',
        nodes: `node-${jobId}`,
        restartCount: 0,
        firstSeen: now(),
        ...extra,
      });
      for (let i = 0; i < count; i++) {
        const id = `${jobId}.0.${i}`;
        pool.workers.push({
          id,
          deployment,
          jobId,
          restartCount: 0,
          index: i,
          host: '127.0.0.1',
          port: 9000 + pool.workers.length,
          baseUrl: `http://127.0.0.1:${9000 + pool.workers.length}`,
          node: `node-${jobId}`,
          gpus: [2 * i, 2 * i + 1],
          engine: 'mock',
          model: 'mock-model',
          state,
          registeredAt: now(),
          lastHeartbeat: now(),
          inFlight: 0,
          requestsServed: 0,
        });
      }
    },
    setWorkers(jobId, state, reason) {
      for (const w of pool.workers) {
        if (w.jobId !== jobId) continue;
        w.state = state;
        if (reason !== undefined) w.reason = reason;
      }
    },
    operator: {
      async setMaxNodes(name, maxNodes): Promise<ScaleResult> {
        pool.calls.push(`setMaxNodes(${name}, ${maxNodes})`);
        const d = pool.deployments.get(name);
        if (d === undefined) {
          throw new PoolError('unknown_deployment', `deployment ${name} is not served here`, {
            param: 'deployment',
          });
        }
        if (!Number.isInteger(maxNodes) || maxNodes < 0) {
          throw new PoolError(
            'invalid_request',
            `maxNodes must be an integer >= 0, got ${String(maxNodes)}`,
            { param: 'maxNodes' },
          );
        }
        const previousMaxNodes = d.maxNodes;
        d.maxNodes = maxNodes;
        return { deployment: name, previousMaxNodes, maxNodes, cancelled: pool.cancelOnScale };
      },
      drainWorker(workerId): DrainResult {
        pool.calls.push(`drainWorker(${workerId})`);
        const w = pool.workers.find((x) => x.id === workerId);
        if (w === undefined || w.state === 'gone') {
          throw new PoolError('unknown_worker', `worker ${workerId} is not registered`, {
            workerId,
            param: 'workerId',
          });
        }
        w.state = 'draining';
        return { drained: [workerId] };
      },
      drainJob(jobId): DrainResult {
        pool.calls.push(`drainJob(${jobId})`);
        const workers = pool.workers.filter((w) => w.jobId === jobId);
        if (workers.length === 0) {
          throw new PoolError('unknown_job', `job ${jobId} has no registered worker here`, {
            jobId,
            param: 'jobId',
          });
        }
        pool.setWorkers(jobId, 'draining', 'drained by an operator');
        return { drained: workers.map((w) => w.id), jobId };
      },
      resume(name) {
        pool.calls.push(`resume(${name})`);
      },
    },
    readModel: {
      worker: (id) => {
        const w = pool.workers.find((x) => x.id === id);
        return w === undefined ? undefined : structuredClone(w);
      },
      status(): ReconcilerStatus {
        const at = now();
        return {
          schedulerId: 'fake',
          provider: 'local',
          running: true,
          lastTickAt: at,
          listFailures: 0,
          deployments: [...pool.deployments].map(([name, d]) => {
            const workers = pool.workers.filter((w) => w.deployment === name);
            const jobs: JobStatus[] = pool.jobs
              .filter((j) => j.deployment === name)
              .map((j) => {
                const job: JobStatus = {
                  jobId: j.jobId,
                  tag: `tag-${j.jobId}`,
                  state: j.state,
                  reason: j.reason,
                  nodes: j.nodes,
                  restartCount: j.restartCount,
                  ageSeconds: Math.round((at - j.firstSeen) / 1000),
                  retiring: false,
                  drained: workers.some((w) => w.jobId === j.jobId && w.state === 'draining'),
                  workers: workers
                    .filter((w) => w.jobId === j.jobId)
                    .map((w) => ({ id: w.id, state: w.state })),
                };
                if (j.timeLeftSeconds !== undefined) job.timeLeftSeconds = j.timeLeftSeconds;
                if (j.cancelReason !== undefined) job.cancelReason = j.cancelReason;
                if (j.endedAt !== undefined) job.endedAt = j.endedAt;
                return job;
              });
            return {
              name,
              jobName: `es-fake-${name}`,
              maxNodes: d.maxNodes,
              jobs,
              workers: structuredClone(workers),
              readyWorkers: workers.filter((w) => w.state === 'ready').length,
              submitting: 0,
              lastErrors: d.lastErrors,
              ...(d.scaling === undefined ? {} : { scaling: structuredClone(d.scaling) }),
            };
          }),
        };
      },
    },
    events: {
      on(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      recentEvents: (limit = 1000) => ring.slice(Math.max(0, ring.length - limit)),
    },
  };
  return pool;
}

/** A deployment's scaling as the status shows it: target 1 of min 0, load 3.5 needing 1. */
export function scalingStatus(): NonNullable<DeploymentStatus['scaling']> {
  return {
    minNodes: 0,
    target: 1,
    load: 3.5,
    need: 1,
    policy: {
      targetInFlight: 8,
      targetKvCacheUsage: 0.9,
      windowMs: 30_000,
      upDelayMs: 60_000,
      downDelayMs: 600_000,
    },
  };
}
