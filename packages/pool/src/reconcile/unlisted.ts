/**
 * Jobs absent from a successful list: ours that left it (ended), and registry jobs the
 * cluster does not list at all (started by hand, not listed yet, or ended while this
 * scheduler was down).
 */
import { RETIRED } from './job-states.js';
import type { ListedTick } from './tick.js';

/**
 * Jobs that vanished from the list have ended (the list succeeded: this is knowledge).
 * Their registry records stay (fencing late heartbeats) until the retention passes.
 */
export function endVanishedJobs(tick: ListedTick): void {
  const { now, next, actions, options, observed, registryJobs, event } = tick;
  for (const tracked of Object.values(next.jobs)) {
    if (observed.has(tracked.jobId)) continue;
    if (tracked.endedAt === undefined) {
      tracked.endedAt = now;
      actions.push({
        type: 'end-job',
        deployment: tracked.deployment,
        jobId: tracked.jobId,
        reason: 'job left the cluster',
      });
      event(
        tracked.drainedAt !== undefined ? 'preempted' : 'gone',
        tracked.deployment,
        tracked.jobId,
        'no longer listed',
      );
    }
    if (now - tracked.endedAt > options.endedRetentionMs) {
      delete next.jobs[tracked.jobId];
      if (registryJobs.has(tracked.jobId)) {
        actions.push({ type: 'forget-job', deployment: tracked.deployment, jobId: tracked.jobId });
      }
    }
  }
}

/**
 * Jobs the cluster does not list: a worker started by hand outside our jobs, a job of ours
 * the controller does not list yet, or one that ended while this scheduler was down. Only
 * a known end or silence tells them apart: a job known to have ended leaves at once;
 * otherwise a worker that keeps heartbeating is alive wherever it runs, so the job is ended
 * (late heartbeats fenced) only once none of its workers heartbeated within the timeout and
 * it registered longer than the grace ago. Such jobs are never tracked, so they neither
 * count against maxNodes nor get cancelled or replaced.
 */
export function endUnlistedJobs(tick: ListedTick): void {
  const { input, now, next, actions, options, observed, workersByJob, goneNow } = tick;
  const known = new Set(input.deployments.map((d) => d.name));
  for (const job of input.registry.jobs) {
    if (observed.has(job.jobId) || !known.has(job.deployment)) continue;
    // Workers timing out in this tick still count here: their silence is what ends the job.
    const live = (workersByJob.get(job.jobId) ?? []).filter(
      (w) => !RETIRED.has(w.state) || goneNow.has(w.id),
    );
    if (live.length === 0) continue;
    const ended = next.jobs[job.jobId]?.endedAt !== undefined;
    const heartbeating = live.some((w) => !goneNow.has(w.id));
    const oldest = Math.min(...live.map((w) => w.registeredAt));
    if (ended || (!heartbeating && now - oldest > options.unlistedGraceMs)) {
      actions.push({
        type: 'end-job',
        deployment: job.deployment,
        jobId: job.jobId,
        reason: ended ? 'job has ended' : 'job not in the cluster list and its workers are silent',
      });
    }
  }
}
