/**
 * Fast capacity return. SLURM gives a requeued job a begin time about 120 s in the future
 * (squeue shows PENDING with reason `BeginTime`), and the fill phase rightly counts that
 * job as held capacity, so a preempted deployment waited two minutes even with a node free.
 * This phase releases such a job (`NodeProvider.release`: `scontrol update JobId=<id>
 * StartTime=now`), so it starts as soon as a node is free. When the cluster refuses the
 * release (site policy), or the job still waits for its begin time `releaseTimeoutMs` after
 * it, the job is cancelled and the fill phase replaces it: the cancelled job is no longer
 * counted and the driver submits a replacement only once its cancel succeeded, so the
 * deployment never holds more than `maxNodes` jobs. A released job that then fails to
 * launch is held by SLURM (`launch failed requeued held`) and handled as every held job is.
 */
import type { ObservedJob } from '../provider.js';
import type { ListedTick } from './tick.js';

/** A requeued job whose only obstacle is SLURM's requeue begin time. */
export function waitsForRequeueDelay(
  job: Pick<ObservedJob, 'state' | 'reason' | 'restartCount'>,
): boolean {
  return job.state === 'PENDING' && job.reason === 'BeginTime' && job.restartCount > 0;
}

/** The release phase: one batched release, and cancels where a release failed. */
export function releaseRequeuedJobs(tick: ListedTick): void {
  const { now, next, options, observed, actions, cancel } = tick;
  if (!options.releaseRequeued) return;
  const deployments = new Set(tick.input.deployments.map((d) => d.name));
  const jobs: { jobId: string; deployment: string }[] = [];
  for (const tracked of Object.values(next.jobs)) {
    const job = observed.get(tracked.jobId);
    if (job === undefined || !deployments.has(tracked.deployment)) continue;
    if (tracked.cancelRequestedAt !== undefined || !waitsForRequeueDelay(job)) continue;
    const release =
      tracked.release?.restartCount === job.restartCount ? tracked.release : undefined;
    if (release === undefined) {
      tracked.release = { restartCount: job.restartCount, at: now };
      jobs.push({ jobId: tracked.jobId, deployment: tracked.deployment });
    } else if (release.refused !== undefined) {
      cancel(tracked, `requeue delay: release refused (${release.refused}); replaced`);
    } else if (now - release.at > options.releaseTimeoutMs) {
      const waited = Math.round((now - release.at) / 1000);
      cancel(
        tracked,
        `requeue delay: still waiting for its begin time ${waited} s after the release; replaced`,
      );
    }
  }
  if (jobs.length > 0) actions.push({ type: 'release', jobs });
}
