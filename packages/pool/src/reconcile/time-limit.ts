/**
 * Time limits: a job within its lead time of its end retires (no longer counted, so the fill
 * phase submits its successor); once the successor has a ready worker the job is drained,
 * and it is cancelled when idle, `drainGraceMs` later, or `timeLimitCancelMs` before its limit
 * (whichever comes first), so its worker drains and hands over before SLURM's kill. The lead time is `leadTimeMs`, at
 * most a quarter of the limit: a job whose whole limit is shorter than `leadTimeMs` would
 * otherwise retire as soon as it runs, and so would each successor.
 */
import type { DeploymentConfig } from '../deployment.js';
import type { WorkerInfo } from '../registry.js';
import { RETIRED } from './job-states.js';
import type { ReconcilerState, TrackedJob } from './state.js';
import type { ListedJob, ListedTick } from './tick.js';

/**
 * Retire a healthy running job ahead of its time limit so a successor is ready in time,
 * and drain, then cancel, it once the successor serves.
 * @param workers the job's workers of its current incarnation
 */
export function retireForTimeLimit(
  tick: ListedTick,
  tracked: TrackedJob,
  job: ListedJob,
  deployment: DeploymentConfig,
  workers: readonly WorkerInfo[],
): void {
  const { now, next, actions, options, workersByJob, goneNow, cancel } = tick;
  const limitMs =
    deployment.timeLimitMinutes !== undefined ? deployment.timeLimitMinutes * 60_000 : undefined;
  let leftMs: number | undefined;
  if (job.timeLeftSeconds !== undefined) leftMs = job.timeLeftSeconds * 1000;
  else if (limitMs !== undefined && tracked.runningSince !== undefined) {
    leftMs = (job.startTime ?? tracked.runningSince) + limitMs - now;
  }
  if (
    limitMs !== undefined &&
    leftMs !== undefined &&
    leftMs <= successorLeadMs(limitMs, options.leadTimeMs) &&
    tracked.retiringSince === undefined
  ) {
    tracked.retiringSince = now;
  }
  if (tracked.retiringSince !== undefined && tracked.successorTag !== undefined) {
    if (tracked.retireDrainAt === undefined) {
      const successor = findJobByTag(next, tracked.successorTag);
      const ready =
        successor !== undefined &&
        (workersByJob.get(successor) ?? []).some((w) => w.state === 'ready' && !goneNow.has(w.id));
      if (ready) {
        tracked.retireDrainAt = now;
        actions.push({
          type: 'drain-job',
          deployment: tracked.deployment,
          jobId: tracked.jobId,
          reason: `time limit: successor ${successor} is ready`,
        });
      }
    } else {
      const idle = workers.every((w) => w.inFlight === 0 || RETIRED.has(w.state));
      // Cancelled by this scheduler while there is time left for its worker's drain grace
      // and hand-over, rather than killed by SLURM at the limit (after only KillWait).
      const nearEnd = leftMs !== undefined && leftMs <= options.timeLimitCancelMs;
      if (
        (idle && now > tracked.retireDrainAt) ||
        nearEnd ||
        now - tracked.retireDrainAt > options.drainGraceMs
      ) {
        cancel(tracked, 'time limit: drained for its successor');
      }
    }
  }
}

/** How long before its time limit a job retires: `leadTimeMs`, at most a quarter of the limit. */
export function successorLeadMs(limitMs: number, leadTimeMs: number): number {
  return Math.min(leadTimeMs, limitMs / 4);
}

function findJobByTag(state: ReconcilerState, tag: string): string | undefined {
  for (const job of Object.values(state.jobs)) if (job.tag === tag) return job.jobId;
  return state.submissions[tag]?.jobId;
}
