/**
 * Jobs operators drain (`PoolOperator.drainJob`): their workers leave routing at once
 * (`planJobDrain`), and a later tick cancels the job once they are idle or the grace is
 * over, and replaces it, as it does for a job retired for its time limit.
 */
import type { WorkerInfo } from '../registry.js';
import {
  clone,
  type JobDrain,
  type ReconcileOptions,
  type ReconcilePlan,
  type ReconcilerState,
} from './state.js';
import type { ListedTick } from './tick.js';

/**
 * Whether a job an operator drained may be cancelled now: none of its workers (still there,
 * not timing out now) has a request in flight, or `jobDrainGraceMs` passed since the drain.
 */
export function jobDrainDue(
  drain: JobDrain,
  workers: readonly WorkerInfo[],
  now: number,
  options: Pick<ReconcileOptions, 'jobDrainGraceMs'>,
  goneNow: ReadonlySet<string> = new Set(),
): boolean {
  if (now - drain.drainedAt > options.jobDrainGraceMs) return true;
  return !workers.some((w) => w.state !== 'gone' && !goneNow.has(w.id) && w.inFlight > 0);
}

/** What an operator's job drain asks for (see {@link planJobDrain}). */
export interface JobDrainRequest {
  jobId: string;
  deployment: string;
  reason: string;
  now: number;
}

/**
 * An operator drains a job (pure): its workers leave routing now (`drain-job`), and the job
 * is remembered so that the first tick that finds them idle (or `jobDrainGraceMs` later)
 * cancels it and submits its replacement, as it does for a job retired for its time limit.
 * Asked again while the cancel is pending, the first drain's time holds; asked again after
 * the cancel, the job is cancelled again.
 * @example
 * const { state, actions } = planJobDrain(previous, { jobId: '42', deployment: 'qwen',
 *   reason: 'drained by an operator', now });
 */
export function planJobDrain(state: ReconcilerState, request: JobDrainRequest): ReconcilePlan {
  const next = clone(state);
  const { jobId, deployment, reason, now } = request;
  const pending = next.jobDrains[jobId];
  if (pending === undefined || pending.cancelRequestedAt !== undefined) {
    next.jobDrains[jobId] = { jobId, deployment, reason, drainedAt: now };
  }
  return { state: next, actions: [{ type: 'drain-job', deployment, jobId, reason }] };
}

/**
 * The drain phase: jobs operators drained are cancelled (and replaced) once their workers
 * are idle or the grace is over. A job the cluster does not list (started by hand) is
 * cancelled too: the operator named it.
 */
export function cancelDrainedJobs(tick: ListedTick): void {
  const { now, next, options, registryJobs, workersByJob, goneNow, cancel, cancelJob } = tick;
  for (const drain of Object.values(next.jobDrains)) {
    const tracked = next.jobs[drain.jobId];
    if (drain.cancelRequestedAt !== undefined) {
      if (now - drain.cancelRequestedAt > options.endedRetentionMs) {
        delete next.jobDrains[drain.jobId];
      }
      continue;
    }
    if (
      tracked?.endedAt !== undefined ||
      tracked?.cancelRequestedAt !== undefined ||
      (tracked === undefined && !registryJobs.has(drain.jobId))
    ) {
      // It ended, another rule cancels it, or it is forgotten: nothing left to do.
      delete next.jobDrains[drain.jobId];
      continue;
    }
    if (!jobDrainDue(drain, workersByJob.get(drain.jobId) ?? [], now, options, goneNow)) continue;
    drain.cancelRequestedAt = now;
    if (tracked !== undefined) cancel(tracked, drain.reason);
    else cancelJob(drain.jobId, drain.deployment, drain.reason);
  }
}
