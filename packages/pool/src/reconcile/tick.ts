/**
 * One tick being planned: its input, the draft of the next state and the actions so far.
 * `planReconcile` (`index.ts`) starts it, and its phases, called in a fixed order, read it
 * and append to it. The draft is a copy of the input's state, so the plan stays pure.
 */
import type { ObservedJob } from '../provider.js';
import type { JobInfo, PoolEventType, WorkerInfo } from '../registry.js';
import { DRAINABLE } from './job-states.js';
import {
  clone,
  type CancelItem,
  type ReconcileAction,
  type ReconcileInput,
  type ReconcileOptions,
  type ReconcilerState,
  type TrackedJob,
} from './state.js';
import { transientDelay } from './submissions.js';

/** A job of the successful list that belongs to one of the deployments. */
export type ListedJob = ObservedJob & { deployment: string };

/** A tick before the cluster's list is read: what every phase needs. */
export interface Tick {
  readonly input: ReconcileInput;
  readonly now: number;
  readonly options: ReconcileOptions;
  /** The next state: a copy of `input.state` that the phases change. */
  readonly next: ReconcilerState;
  /** The plan's actions, in the order the driver performs them. */
  readonly actions: ReconcileAction[];
  /** Workers timing out in this tick (see `liveness.ts`). */
  readonly goneNow: Set<string>;
  /** Of those, the ones the timer between ticks took out while they were ready. */
  readonly readyWhenTimedOut: Set<string>;
  /** Append a pool event. */
  event(type: PoolEventType, deployment: string, jobId?: string, reason?: string): void;
  /** Count a job that ended before any worker was ready (once per job). */
  launchFailed(tracked: TrackedJob, how: string): void;
}

/** A tick whose list succeeded: the list read, the registry indexed, the cancel batch open. */
export interface ListedTick extends Tick {
  /** The listed jobs of the deployments, by job id. */
  readonly observed: ReadonlyMap<string, ListedJob>;
  /** This is the first successful list of this scheduler (its jobs are adopted). */
  readonly firstList: boolean;
  readonly workersByJob: ReadonlyMap<string, WorkerInfo[]>;
  readonly registryJobs: ReadonlyMap<string, JobInfo>;
  /** The tick's single batched cancel, appended last. */
  readonly cancels: CancelItem[];
  /** Cancel a job, taking its workers still in service out of routing first. */
  cancelJob(jobId: string, deployment: string, reason: string): void;
  /** Cancel a tracked job and remember why. */
  cancel(tracked: TrackedJob, reason: string): void;
}

/** Start planning a tick: the draft state and the helpers every phase shares. */
export function startTick(input: ReconcileInput): Tick {
  const { now, options } = input;
  const next = clone(input.state);
  const actions: ReconcileAction[] = [];
  return {
    input,
    now,
    options,
    next,
    actions,
    goneNow: new Set(),
    readyWhenTimedOut: new Set(),
    event(type, deployment, jobId, reason) {
      const e: { type: PoolEventType; deployment: string; jobId?: string; reason?: string } = {
        type,
        deployment,
      };
      if (jobId !== undefined) e.jobId = jobId;
      if (reason !== undefined) e.reason = reason;
      actions.push({ type: 'event', event: e });
    },
    // A job that ended before any worker was ready: its replacement waits (capped doubling).
    launchFailed(tracked, how) {
      if (tracked.everReady === true || tracked.launchFailed === true) return;
      tracked.launchFailed = true;
      const count = (next.launchFailures[tracked.deployment]?.count ?? 0) + 1;
      next.launchFailures[tracked.deployment] = {
        count,
        until: now + transientDelay(options, count, input.jitter ?? 0.5),
        lastJobId: tracked.jobId,
        message: how,
      };
    },
  };
}

/**
 * The tick, with the list read and the registry indexed. Cancellations are batched. Whoever
 * asks for one (a rule, a lower maxNodes, an operator), the job's workers still in service
 * leave routing first: the `drain-job` comes before the cancel and the driver applies it
 * before any provider call, so no new request starts on a node about to be signalled, and
 * those in flight finish.
 */
export function listedTick(
  tick: Tick,
  list: Pick<ListedTick, 'observed' | 'firstList' | 'workersByJob' | 'registryJobs'>,
): ListedTick {
  const { actions, goneNow, now } = tick;
  const cancels: CancelItem[] = [];
  const cancelJob = (jobId: string, deployment: string, reason: string): void => {
    const inService = (list.workersByJob.get(jobId) ?? []).some(
      (w) => DRAINABLE.has(w.state) && !goneNow.has(w.id),
    );
    if (inService) actions.push({ type: 'drain-job', deployment, jobId, reason });
    cancels.push({ jobId, deployment, reason });
  };
  return {
    ...tick,
    ...list,
    cancels,
    cancelJob,
    cancel(tracked, reason) {
      tracked.cancelRequestedAt = now;
      tracked.cancelReason = reason;
      cancelJob(tracked.jobId, tracked.deployment, reason);
    },
  };
}
