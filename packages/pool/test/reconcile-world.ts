/**
 * A little world for the planner's table tests: the cluster's list, the registry's workers
 * and the reconciler's memory, with helpers that build jobs and workers and pick actions.
 */
import type {
  DeploymentConfig,
  JobState,
  ObservedJob,
  WorkerInfo,
  WorkerState,
} from '../src/index.js';
import {
  DEFAULT_RECONCILE_OPTIONS,
  initialReconcilerState,
  planHeartbeatTimeouts,
  planReconcile,
  settleSubmission,
  type ReconcileAction,
  type ReconcileOptions,
  type ReconcilerState,
} from '../src/reconcile/index.js';
import { deployment } from './helpers.js';

export const options: ReconcileOptions = {
  ...DEFAULT_RECONCILE_OPTIONS,
  schedulerId: 't',
  maxSubmitsPerTick: 2,
  startupTimeoutMs: 600_000,
  leadTimeMs: 600_000,
};
export const NAME = 'es-t-m';

export function job(id: string, state: JobState, extra: Partial<ObservedJob> = {}): ObservedJob {
  return {
    id,
    name: NAME,
    tag: `tag-${id}`,
    state,
    reason: state === 'PENDING' ? 'Priority' : '',
    nodes: state === 'RUNNING' ? `n${id}` : '',
    restartCount: 0,
    ...extra,
  };
}

export function worker(
  jobId: string,
  index: number,
  state: WorkerState,
  extra: Partial<WorkerInfo> = {},
): WorkerInfo {
  return {
    id: `${jobId}.0.${index}`,
    deployment: 'm',
    jobId,
    restartCount: 0,
    index,
    host: 'h',
    port: 8001 + index,
    baseUrl: `http://h:${8001 + index}`,
    node: 'n',
    gpus: [index],
    engine: 'mock',
    model: '/models/m',
    state,
    registeredAt: 0,
    lastHeartbeat: T0,
    inFlight: 0,
    requestsServed: 0,
    ...extra,
  };
}

export const T0 = 10_000_000;

/** A little world: the cluster's list, the registry's workers, the reconciler's memory. */
export class World {
  now = T0;
  state: ReconcilerState = initialReconcilerState();
  jobs: ObservedJob[] = [];
  workers: WorkerInfo[] = [];
  deployments: DeploymentConfig[] = [deployment('m', { maxNodes: 3 })];
  /** The planner's options (default {@link options}). */
  planOptions: ReconcileOptions = options;
  /** Requests waiting in the proxies, per deployment. */
  queued: Record<string, number> = {};

  tick(observed: ObservedJob[] | 'unknown' = this.jobs): ReconcileAction[] {
    const registryJobs = [...new Set(this.workers.map((w) => w.jobId))].map((jobId) => ({
      jobId,
      deployment: 'm',
      restartCount: Math.max(
        ...this.workers.filter((w) => w.jobId === jobId).map((w) => w.restartCount),
      ),
      registeredAt: 1,
      workerIds: this.workers.filter((w) => w.jobId === jobId).map((w) => w.id),
    }));
    const plan = planReconcile({
      now: this.now,
      deployments: this.deployments,
      observed,
      observedAt: this.now,
      registry: { jobs: registryJobs, workers: this.workers },
      state: this.state,
      options: this.planOptions,
      queued: this.queued,
    });
    this.state = plan.state;
    return plan.actions;
  }

  /** The reconciler's heartbeat timer between two ticks: silent workers go out at once. */
  sweep(): ReconcileAction[] {
    const plan = planHeartbeatTimeouts({
      now: this.now,
      workers: this.workers,
      state: this.state,
      options,
    });
    this.state = plan.state;
    for (const a of ofType(plan.actions, 'worker-gone')) {
      const w = this.workers.find((x) => x.id === a.workerId)!;
      Object.assign(w, { state: 'gone', reason: a.reason });
    }
    return plan.actions;
  }

  /** Apply the drains of `actions` to the workers, as the registry does (`drainJob`). */
  drain(actions: ReconcileAction[]): ReconcileAction[] {
    for (const a of ofType(actions, 'drain-job')) {
      for (const x of this.workers) {
        if (x.jobId === a.jobId && ['starting', 'loading', 'ready'].includes(x.state)) {
          Object.assign(x, { state: 'draining', reason: a.reason });
        }
      }
    }
    return actions;
  }

  /** Every worker heartbeats now. */
  heartbeat(): void {
    for (const x of this.workers) x.lastHeartbeat = this.now;
  }

  /** Settle every planned submission as the provider answered. */
  settle(actions: ReconcileAction[], answer: (tag: string, i: number) => string | Error) {
    submits(actions).forEach((s, i) => {
      const result = answer(s.tag, i);
      this.state = settleSubmission(
        this.state,
        s.tag,
        typeof result === 'string'
          ? { ok: true, jobId: result }
          : {
              ok: false,
              failure: {
                kind: (result as Error & { kind: 'transient' }).kind,
                ambiguous: Boolean((result as Error & { ambiguous?: boolean }).ambiguous),
                message: result.message,
              },
            },
        this.now,
        options,
        1,
      );
    });
  }
}

/** One running job (maxNodes 1) whose one worker, `state` when a tick saw it, then fell silent for longer than the timeout. */
export function oneSilentWorker(state: WorkerState = 'ready'): World {
  const w = new World();
  w.deployments = [deployment('m', { maxNodes: 1 })];
  w.jobs = [job('1', 'RUNNING')];
  w.workers = [worker('1', 0, state)];
  w.tick();
  w.now += options.heartbeatTimeoutMs + 1;
  return w;
}

export const submits = (a: ReconcileAction[]) =>
  a.filter((x): x is ReconcileAction & { type: 'submit' } => x.type === 'submit');
export const cancels = (a: ReconcileAction[]) =>
  a.filter((x): x is ReconcileAction & { type: 'cancel' } => x.type === 'cancel');
export const ofType = <T extends ReconcileAction['type']>(a: ReconcileAction[], type: T) =>
  a.filter((x): x is Extract<ReconcileAction, { type: T }> => x.type === type);
export const events = (a: ReconcileAction[]) => ofType(a, 'event').map((e) => e.event.type);
export const failure = (kind: string, message: string, ambiguous = false) =>
  Object.assign(new Error(message), { kind, ambiguous });
