/**
 * Listed jobs that will not serve: a held job, a running job with no worker registered
 * within the start-up timeout, a running job whose workers are all gone or failed. Each is
 * cancelled (and replaced by the fill phase); all but an admin or user hold count as a
 * launch failure of their deployment. A healthy running job goes on to its time limit.
 */
import { RETIRED, isHeld, isLiveState, isRunning } from './job-states.js';
import type { ListedTick } from './tick.js';
import { retireForTimeLimit } from './time-limit.js';

/** The running-jobs phase: cancels the jobs that will not serve, retires those near their end. */
export function judgeRunningJobs(tick: ListedTick): void {
  const { input, now, next, options, observed, registryJobs, workersByJob, goneNow } = tick;
  const { cancel, launchFailed } = tick;
  const deploymentsByName = new Map(input.deployments.map((d) => [d.name, d]));
  for (const tracked of Object.values(next.jobs)) {
    const job = observed.get(tracked.jobId);
    if (job === undefined || !isLiveState(job.state) || tracked.cancelRequestedAt !== undefined) {
      continue;
    }
    const deployment = deploymentsByName.get(tracked.deployment);
    if (deployment === undefined) continue;
    if (isHeld(job)) {
      cancel(tracked, `held: ${job.reason || job.state}`);
      // SLURM holds a job whose launch failed (`launch failed requeued held`); admin and
      // user holds say nothing about the deployment.
      if (/launch failed/i.test(job.reason)) launchFailed(tracked, `held (${job.reason})`);
      continue;
    }
    if (!isRunning(job.state)) continue;
    const reg = registryJobs.get(job.id);
    const registered =
      reg !== undefined && reg.restartCount === job.restartCount && reg.registeredAt !== undefined;
    const workers = (workersByJob.get(job.id) ?? []).filter(
      (w) => w.restartCount === job.restartCount,
    );
    if (!registered || workers.length === 0) {
      if (
        tracked.runningSince !== undefined &&
        now - tracked.runningSince > options.startupTimeoutMs
      ) {
        const why = `no worker registered within ${Math.round(options.startupTimeoutMs / 1000)} s`;
        cancel(tracked, why);
        launchFailed(tracked, why);
      }
      continue;
    }
    if (workers.every((w) => RETIRED.has(w.state) || goneNow.has(w.id))) {
      const reasons = [...new Set(workers.map((w) => w.reason ?? w.state))].join('; ');
      cancel(tracked, `all workers gone or failed (${reasons})`);
      launchFailed(tracked, `every worker failed before it was ready (${reasons})`);
      continue;
    }
    retireForTimeLimit(tick, tracked, job, deployment, workers);
  }
}
