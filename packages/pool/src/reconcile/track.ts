/**
 * Tracking what the list shows: new jobs (adopted, or ours), requeues (a new incarnation),
 * jobs starting or leaving RUNNING, jobs that ended (and how: preempted, failed, cancelled,
 * gone; at launch or not), the first ready worker of a job, and drain notices.
 */
import { FAILED, isLiveState, isRunning } from './job-states.js';
import type { ListedTick } from './tick.js';

/** The tracking phase: updates `next.jobs` from the list, with its actions and events. */
export function trackListedJobs(tick: ListedTick): void {
  const { now, next, actions, observed, firstList, workersByJob, readyWhenTimedOut } = tick;
  const { event, launchFailed } = tick;
  for (const job of observed.values()) {
    let tracked = next.jobs[job.id];
    const isNew = tracked === undefined;
    // Whether this scheduler knows the job's life: seen live before, or submitted by it.
    let known = !isNew;
    if (tracked === undefined) {
      tracked = {
        jobId: job.id,
        deployment: job.deployment,
        tag: job.tag,
        state: job.state,
        reason: job.reason,
        nodes: job.nodes,
        restartCount: job.restartCount,
        firstSeen: now,
        lastSeen: now,
      };
      next.jobs[job.id] = tracked;
      const ours = Object.values(tick.input.state.submissions).some(
        (s) => s.tag === job.tag || s.jobId === job.id,
      );
      known = ours;
      if (firstList || !ours) {
        if (isLiveState(job.state)) event('adopted', job.deployment, job.id, `${job.state}`);
      }
      if (job.restartCount > 0) {
        actions.push({
          type: 'note-incarnation',
          deployment: job.deployment,
          jobId: job.id,
          restartCount: job.restartCount,
        });
      }
    }
    const wasRunning = !isNew && isRunning(tracked.state);
    const requeued = job.restartCount > tracked.restartCount;
    if (requeued) {
      actions.push({
        type: 'note-incarnation',
        deployment: job.deployment,
        jobId: job.id,
        restartCount: job.restartCount,
      });
      event('preempted', job.deployment, job.id, `requeued (restart count ${job.restartCount})`);
      // A new incarnation starts clean: its drain, retirement and start-up clocks reset.
      delete tracked.drainedAt;
      delete tracked.retiringSince;
      delete tracked.successorTag;
      delete tracked.retireDrainAt;
      delete tracked.runningSince;
    }
    if (isRunning(job.state) && (!wasRunning || requeued)) {
      tracked.runningSince = now;
      event('running', job.deployment, job.id, job.nodes);
    }
    if (wasRunning && !isRunning(job.state)) {
      // Leaving RUNNING: its workers stop receiving requests now, whatever comes next.
      actions.push({
        type: 'end-job',
        deployment: job.deployment,
        jobId: job.id,
        reason: `job ${job.state}${job.reason ? ` (${job.reason})` : ''}`,
        restartCount: tracked.restartCount,
      });
      if (job.state !== 'COMPLETING' && isLiveState(job.state) && !requeued) {
        event('preempted', job.deployment, job.id, `left RUNNING for ${job.state}`);
      }
      delete tracked.runningSince;
    }
    if (!isLiveState(job.state) && tracked.endedAt === undefined) {
      tracked.endedAt = now;
      if (!wasRunning) {
        actions.push({
          type: 'end-job',
          deployment: job.deployment,
          jobId: job.id,
          reason: `job ${job.state}`,
        });
      }
      const why = `${job.state}${job.reason ? ` (${job.reason})` : ''}`;
      if (
        known &&
        tracked.drainedAt === undefined &&
        (FAILED.has(job.state) || job.state === 'COMPLETED')
      ) {
        launchFailed(tracked, why);
      }
      if (
        job.state === 'PREEMPTED' ||
        (tracked.drainedAt !== undefined && job.state === 'COMPLETED')
      ) {
        event('preempted', job.deployment, job.id, why);
      } else if (FAILED.has(job.state)) event('failed', job.deployment, job.id, why);
      else if (job.state === 'CANCELLED') event('cancelled', job.deployment, job.id, why);
      else event('gone', job.deployment, job.id, why);
    }
    const workers = (workersByJob.get(job.id) ?? []).filter(
      (w) => w.restartCount === job.restartCount,
    );
    if (
      tracked.everReady !== true &&
      workers.some((w) => w.state === 'ready' || readyWhenTimedOut.has(w.id))
    ) {
      // The deployment launches fine again: replacements need not wait any more.
      tracked.everReady = true;
      delete next.launchFailures[job.deployment];
    }
    if (
      tracked.drainedAt === undefined &&
      tracked.retireDrainAt === undefined &&
      workers.some((w) => w.state === 'draining')
    ) {
      tracked.drainedAt = now;
    }
    Object.assign(tracked, {
      state: job.state,
      reason: job.reason,
      nodes: job.nodes,
      restartCount: Math.max(tracked.restartCount, job.restartCount),
      lastSeen: now,
      tag: job.tag || tracked.tag,
    });
    for (const key of ['timeLeftSeconds', 'startTime', 'submitTime'] as const) {
      if (job[key] !== undefined) tracked[key] = job[key];
    }
    if (job.expectedStart !== undefined) tracked.expectedStart = job.expectedStart;
    else delete tracked.expectedStart;
  }
}
