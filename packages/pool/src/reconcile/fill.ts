/**
 * Filling: each deployment is brought to `maxNodes`, counting its live jobs and its
 * submissions in flight. Over it, the surplus is cancelled (pending jobs first); under it,
 * unless the deployment backs off, submissions replace the jobs that ended, were
 * cancelled or retire for their time limit (oldest first), then fill the rest.
 */
import { isLiveState } from './job-states.js';
import type { ReconcileAction, SubmissionRecord, TrackedJob } from './state.js';
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

/** The fill phase: greedily, but at most `maxSubmitsPerTick` submissions per tick. */
export function fillDeployments(tick: ListedTick): void {
  const { input, now, next, actions, options, observed, cancel } = tick;
  let budget = options.maxSubmitsPerTick;
  for (const deployment of input.deployments) {
    const name = deployment.name;
    const requeues = deployment.cluster?.requeue !== false;
    const counted: TrackedJob[] = [];
    for (const tracked of Object.values(next.jobs)) {
      if (tracked.deployment !== name) continue;
      const job = observed.get(tracked.jobId);
      if (job === undefined || !isLiveState(job.state)) continue;
      if (tracked.cancelRequestedAt !== undefined || tracked.retiringSince !== undefined) continue;
      // A drained job that SLURM will requeue comes back by itself: it keeps its slot.
      if (tracked.drainedAt !== undefined && !requeues) continue;
      counted.push(tracked);
    }
    const pending = Object.values(next.submissions).filter((s) => s.deployment === name);
    const have = counted.length + pending.length;

    if (have > deployment.maxNodes) {
      // Scale down (maxNodes lowered, or more jobs adopted than wanted): pending jobs first.
      const surplus = counted
        .filter((t) => t.cancelRequestedAt === undefined)
        .sort(
          (a, b) =>
            Number(a.state === 'RUNNING') - Number(b.state === 'RUNNING') ||
            b.firstSeen - a.firstSeen,
        )
        .slice(0, have - deployment.maxNodes);
      for (const t of surplus) {
        cancel(t, `more than maxNodes ${deployment.maxNodes}`);
        t.replaced = true;
      }
      continue;
    }
    let want = deployment.maxNodes - have;
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
