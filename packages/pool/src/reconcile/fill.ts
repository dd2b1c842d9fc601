/**
 * Filling: each deployment is brought to its target — `maxNodes`, or the demand-aware
 * target between `minNodes` and `maxNodes` (`scale.ts`) — counting its live jobs and its
 * submissions in flight, never holding more than `maxNodes`. Over `maxNodes` (lowered by an
 * operator, or more jobs adopted than wanted) the surplus is cancelled, pending jobs first.
 * Over a lower demand-aware target, pending jobs are cancelled and running ones drained: their
 * workers leave routing, and the job is cancelled once idle (or `jobDrainGraceMs` later; its
 * worker hands what is still running over), with no replacement. Under the target, unless the
 * deployment backs off, submissions replace the jobs that ended, were cancelled or retire for
 * their time limit (oldest first), then fill the rest.
 */
import type { DeploymentConfig } from '../deployment.js';
import { isLiveState, isRunning } from './job-states.js';
import type { ReconcileAction, ReconcilerState, SubmissionRecord, TrackedJob } from './state.js';
import type { ListedTick } from './tick.js';

/** A unique `--comment` tag for one submission. */
export function submissionTag(
  schedulerId: string,
  deployment: string,
  now: number,
  seq: number,
): string {
  return `es:${schedulerId}:${deployment}:${now.toString(36)}.${seq.toString(36)}`;
}

/** What a deployment holds in one tick (see {@link heldJobs}). */
export interface Held {
  /** Live jobs that count toward its target (not cancelled, retiring or scaled down). */
  counted: TrackedJob[];
  /** Submissions in flight. */
  pending: SubmissionRecord[];
  /** Live jobs drained for a lower target and not cancelled yet: held, but not counted. */
  scalingDown: TrackedJob[];
}

/** The jobs a deployment holds, as the fill phase counts them. */
export function heldJobs(
  tick: Pick<ListedTick, 'next' | 'observed'>,
  deployment: DeploymentConfig,
): Held {
  const { next, observed } = tick;
  const name = deployment.name;
  const requeues = deployment.cluster?.requeue !== false;
  const held: Held = { counted: [], pending: [], scalingDown: [] };
  for (const tracked of Object.values(next.jobs)) {
    if (tracked.deployment !== name) continue;
    const job = observed.get(tracked.jobId);
    if (job === undefined || !isLiveState(job.state)) continue;
    if (tracked.cancelRequestedAt !== undefined || tracked.retiringSince !== undefined) continue;
    if (isScalingDown(next, tracked.jobId)) {
      held.scalingDown.push(tracked);
      continue;
    }
    // A drained job that SLURM will requeue comes back by itself: it keeps its slot.
    if (tracked.drainedAt !== undefined && !requeues) continue;
    held.counted.push(tracked);
  }
  held.pending = Object.values(next.submissions).filter((s) => s.deployment === name);
  return held;
}

/** Whether a job was drained for a lower target and waits for its cancel. */
function isScalingDown(state: ReconcilerState, jobId: string): boolean {
  const drain = state.jobDrains[jobId];
  return drain?.scaleDown === true && drain.cancelRequestedAt === undefined;
}

/** The fill phase: greedily, but at most `maxSubmitsPerTick` submissions per tick. */
export function fillDeployments(tick: ListedTick): void {
  const { input, now, next, actions, options, observed, cancel } = tick;
  let budget = options.maxSubmitsPerTick;
  for (const deployment of input.deployments) {
    const name = deployment.name;
    const { counted, pending, scalingDown } = heldJobs(tick, deployment);
    const have = counted.length + pending.length;
    const target = next.scaling[name]?.target ?? deployment.maxNodes;

    if (have > deployment.maxNodes) {
      // Scale down (maxNodes lowered, or more jobs adopted than wanted): pending jobs first.
      const surplus = counted
        .filter((t) => t.cancelRequestedAt === undefined)
        .sort(
          (a, b) =>
            Number(isRunning(a.state)) - Number(isRunning(b.state)) || b.firstSeen - a.firstSeen,
        )
        .slice(0, have - deployment.maxNodes);
      for (const t of surplus) {
        cancel(t, `more than maxNodes ${deployment.maxNodes}`);
        t.replaced = true;
      }
      continue;
    }
    if (have > target) {
      scaleDown(tick, counted, have - target, target);
      continue;
    }
    // Jobs still draining for a lower target hold their nodes: the cap counts them.
    let want = Math.min(target - have, deployment.maxNodes - have - scalingDown.length);
    if (want <= 0 || budget <= 0) continue;
    if (next.permanent[name] !== undefined) continue;
    const backoff = next.backoff[name];
    if (backoff !== undefined) {
      const exited =
        backoff.kind === 'policy' &&
        (backoff.waitForExit ?? []).some((id) => {
          const job = observed.get(id);
          return job === undefined || !isLiveState(job.state);
        });
      if (exited) backoff.until = now;
      if (backoff.until > now) continue;
    }
    if ((next.launchFailures[name]?.until ?? 0) > now) continue;
    const toReplace = Object.values(next.jobs)
      .filter(
        (t) =>
          t.deployment === name &&
          !t.replaced &&
          (t.endedAt !== undefined ||
            t.cancelRequestedAt !== undefined ||
            t.retiringSince !== undefined),
      )
      .sort(
        (a, b) =>
          (a.retiringSince ?? a.endedAt ?? a.cancelRequestedAt ?? 0) -
          (b.retiringSince ?? b.endedAt ?? b.cancelRequestedAt ?? 0),
      );
    while (want > 0 && budget > 0) {
      want--;
      budget--;
      const tag = submissionTag(options.schedulerId, name, now, next.seq++);
      const replaced = toReplace.shift();
      const action: ReconcileAction & { type: 'submit' } = {
        type: 'submit',
        deployment: name,
        tag,
        reason: 'fill',
      };
      const record: SubmissionRecord = { tag, deployment: name, startedAt: now };
      if (replaced !== undefined) {
        replaced.replaced = true;
        action.replaces = replaced.jobId;
        record.replaces = replaced.jobId;
        if (replaced.retiringSince !== undefined && replaced.endedAt === undefined) {
          replaced.successorTag = tag;
          action.reason = 'time-limit successor';
        } else action.reason = 'replacement';
      }
      next.submissions[tag] = record;
      actions.push(action);
    }
  }
}

/**
 * Scale down by `count` jobs for a lower target: pending jobs are cancelled first (they
 * serve nothing), youngest first; then running jobs are drained, chosen by
 * {@link scaleDownOrder}. A drained job's workers leave routing now; the drain phase
 * cancels it once idle or `jobDrainGraceMs` later, when its worker hands the generations
 * still running over. Neither is replaced.
 */
function scaleDown(tick: ListedTick, counted: TrackedJob[], count: number, target: number): void {
  const { next, now, actions, cancel, workersByJob } = tick;
  const reason = `scaled down to ${target} node${target === 1 ? '' : 's'}`;
  const waiting = counted
    .filter((t) => !isRunning(t.state))
    .sort((a, b) => b.firstSeen - a.firstSeen);
  const running = counted
    .filter((t) => isRunning(t.state))
    .sort((a, b) => scaleDownOrder(a, b, (t) => inFlightOf(workersByJob.get(t.jobId))));
  for (const t of [...waiting, ...running].slice(0, count)) {
    t.replaced = true;
    if (!isRunning(t.state)) {
      cancel(t, reason);
      continue;
    }
    next.jobDrains[t.jobId] = {
      jobId: t.jobId,
      deployment: t.deployment,
      reason,
      drainedAt: now,
      scaleDown: true,
    };
    actions.push({ type: 'drain-job', deployment: t.deployment, jobId: t.jobId, reason });
  }
}

const inFlightOf = (workers: readonly { state: string; inFlight: number }[] | undefined) =>
  (workers ?? []).reduce((sum, w) => sum + (w.state === 'gone' ? 0 : w.inFlight), 0);

/**
 * Which running job a scale-down drains first: the one with the fewest requests in flight
 * (the fewest generations to hand over), then the one with the least time left before its
 * time limit (it would need a successor soonest: draining it saves a submission), then the
 * youngest (its engines have warmed the least cache).
 */
export function scaleDownOrder(
  a: TrackedJob,
  b: TrackedJob,
  inFlight: (job: TrackedJob) => number,
): number {
  return (
    inFlight(a) - inFlight(b) ||
    (a.timeLeftSeconds ?? Number.POSITIVE_INFINITY) -
      (b.timeLeftSeconds ?? Number.POSITIVE_INFINITY) ||
    (b.runningSince ?? b.firstSeen) - (a.runningSince ?? a.firstSeen)
  );
}
