/**
 * Worker state changes and incarnation fencing. `setState` is the one place a worker's state
 * is set: it republishes the routable set when the worker enters or leaves `ready`, records
 * the event, and announces a worker lost when it stops serving without a drain. A newer
 * incarnation of a job retires the older workers; a fenced worker is refused.
 */
import { PoolError } from '../errors.js';
import type { PoolEvent, WorkerState } from '../registry.js';
import type { PoolEventLog } from '../roles.js';
import { fencedMessage, type JobRecord, type RegistryStore, type WorkerRecord } from './records.js';
import type { Routing } from './routing.js';

/** The state machine of the registry's workers. */
export interface Lifecycle {
  setState(w: WorkerRecord, state: WorkerState, reason?: string): void;
  /** Gone or failed, unless it already is either. */
  retire(w: WorkerRecord, state: 'gone' | 'failed', reason: string): void;
  /** A scheduler-initiated drain: workers still starting, loading or ready start draining. */
  drainInService(w: WorkerRecord | undefined, reason: string): void;
  /** Moves the job to a newer incarnation: every older worker leaves service. */
  advance(job: JobRecord, restartCount: number, why: string): void;
  /**
   * A registered worker not gone; throws `PoolError` `fenced` for an ended or superseded
   * incarnation, `unknown_worker` otherwise.
   */
  getWorker(workerId: string, restartCount?: number): WorkerRecord;
  /** Tell the lost-worker listeners. */
  announceLost(workerId: string, reason: string): void;
  onWorkerLost(listener: (workerId: string, reason: string) => void): () => void;
}

/** The worker state machine over `store`, publishing through `routing` and `emit`. */
export function createLifecycle(
  store: RegistryStore,
  routing: Routing,
  emit: PoolEventLog['emit'],
): Lifecycle {
  const { now, jobs, workers } = store;
  const lostListeners = new Set<(workerId: string, reason: string) => void>();

  function announceLost(workerId: string, reason: string): void {
    for (const listener of [...lostListeners]) {
      try {
        listener(workerId, reason);
      } catch {
        // A listener's failure must not break the registry.
      }
    }
  }

  function setState(w: WorkerRecord, state: WorkerState, reason?: string): void {
    if (w.state === state) return;
    const wasRoutable = w.state === 'ready';
    // A draining worker's in-flight requests are let finish (preemption grace, scancel).
    const wasDraining = w.state === 'draining';
    w.state = state;
    if (reason !== undefined) w.reason = reason;
    if (state === 'gone' || state === 'failed') w.goneAt = now();
    if (wasRoutable || state === 'ready') routing.republish(w.deployment);
    const event: Omit<PoolEvent, 'at'> = { type: 'registered', deployment: w.deployment };
    event.jobId = w.jobId;
    event.workerId = w.id;
    if (reason !== undefined) event.reason = reason;
    if (state === 'ready' || state === 'draining' || state === 'gone' || state === 'failed') {
      emit({ ...event, type: state });
    } else if (wasRoutable && state === 'loading') emit({ ...event, type: 'unready' });
    const lost = state === 'gone' || state === 'failed' || (wasRoutable && state === 'loading');
    if (lost && !wasDraining) announceLost(w.id, reason ?? state);
  }

  function retire(w: WorkerRecord, state: 'gone' | 'failed', reason: string): void {
    if (w.state === 'gone' || w.state === 'failed') return;
    setState(w, state, reason);
  }

  return {
    setState,
    retire,
    announceLost,

    drainInService(w, reason) {
      if (
        w !== undefined &&
        (w.state === 'ready' || w.state === 'loading' || w.state === 'starting')
      ) {
        setState(w, 'draining', reason);
      }
    },

    advance(job, restartCount, why) {
      if (restartCount <= job.restartCount) return;
      job.restartCount = restartCount;
      job.registeredAt = undefined;
      for (const id of job.workers) {
        const w = workers.get(id);
        if (w !== undefined && w.restartCount < restartCount) retire(w, 'gone', why);
      }
    },

    getWorker(workerId, restartCount) {
      const w = workers.get(workerId);
      if (w !== undefined) {
        const job = jobs.get(w.jobId);
        const fenced = job && fencedMessage(job, restartCount ?? w.restartCount);
        if (fenced !== undefined) {
          throw new PoolError('fenced', fenced, {
            jobId: w.jobId,
            workerId,
            param: 'restartCount',
          });
        }
        if (w.state !== 'gone') return w;
      } else if (restartCount !== undefined) {
        // A worker id is `<jobId>.<restart>.<index>`: fence an old incarnation even when the
        // registry no longer holds that worker, so it exits instead of re-registering.
        const jobId = workerId.split('.').slice(0, -2).join('.');
        const job = jobs.get(jobId);
        const fenced = job && fencedMessage(job, restartCount);
        if (fenced !== undefined) {
          throw new PoolError('fenced', fenced, { jobId, workerId, param: 'restartCount' });
        }
      }
      throw new PoolError(
        'unknown_worker',
        `worker ${workerId} is not registered: register again`,
        { workerId },
      );
    },

    onWorkerLost(listener) {
      lostListeners.add(listener);
      return () => lostListeners.delete(listener);
    },
  };
}
