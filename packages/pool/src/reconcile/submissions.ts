/**
 * What the driver reports back between plans (pure): the outcome of a submission, of the
 * batched cancel, of the batched release, and an operator's resume. Submission failures set the backoff the fill
 * phase (`fill.ts`) waits for.
 */
import { backoffDelay } from '@es/protocol';
import type { ProviderFailure } from '../provider.js';
import { clone, type ReconcileOptions, type ReconcilerState } from './state.js';

/** Outcome of one `provider.submit`. */
export type SubmitOutcome = { ok: true; jobId: string } | { ok: false; failure: ProviderFailure };

/**
 * Record the outcome of a submission (pure). Failures set the deployment's backoff by class:
 * transient doubles from `transientInitialMs` up to `transientMaxMs` with jitter; policy
 * waits for one of the deployment's jobs to leave (or `policyRetryMs`); permanent stops
 * submitting for the deployment. An ambiguous failure keeps the submission counted until a
 * later list shows (or does not show) its tag.
 * @param jitter a number in [0, 1) (e.g. `Math.random()`).
 */
export function settleSubmission(
  state: ReconcilerState,
  tag: string,
  outcome: SubmitOutcome,
  now: number,
  options: ReconcileOptions,
  jitter: number,
): ReconcilerState {
  const next = clone(state);
  const sub = next.submissions[tag];
  if (sub === undefined) return next;
  const name = sub.deployment;
  if (outcome.ok) {
    sub.settledAt = now;
    sub.jobId = outcome.jobId;
    delete next.backoff[name];
    return next;
  }
  const { failure } = outcome;
  if (failure.ambiguous) {
    sub.settledAt = now;
    sub.ambiguous = true;
  } else {
    Object.assign(next, abandonSubmission(next, tag));
  }
  if (failure.kind === 'permanent') {
    next.permanent[name] = { message: failure.message, at: now };
    delete next.backoff[name];
    return next;
  }
  const attempts = (next.backoff[name]?.attempts ?? 0) + 1;
  if (failure.kind === 'policy') {
    next.backoff[name] = {
      kind: 'policy',
      attempts,
      until: now + options.policyRetryMs,
      message: failure.message,
      waitForExit: Object.values(next.jobs)
        .filter((j) => j.deployment === name && j.endedAt === undefined)
        .map((j) => j.jobId),
    };
    return next;
  }
  next.backoff[name] = {
    kind: 'transient',
    attempts,
    until: now + transientDelay(options, attempts, jitter),
    message: failure.message,
  };
  return next;
}

/**
 * The wait before attempt `attempts + 1` (`backoffDelay` of `@es/protocol`):
 * `transientInitialMs` doubled per attempt, capped at `transientMaxMs`, with equal jitter
 * (into [half, full]) placed by `jitter` in [0, 1), in whole milliseconds.
 */
export function transientDelay(
  options: Pick<ReconcileOptions, 'transientInitialMs' | 'transientMaxMs'>,
  attempts: number,
  jitter: number,
): number {
  return Math.round(
    backoffDelay(attempts, {
      initialMs: options.transientInitialMs,
      maxMs: options.transientMaxMs,
      jitter: 'equal',
      random: jitter,
    }),
  );
}

/** Drop a planned submission that was never attempted (its deployment is backing off). */
export function abandonSubmission(state: ReconcilerState, tag: string): ReconcilerState {
  const next = clone(state);
  const sub = next.submissions[tag];
  if (sub === undefined) return next;
  delete next.submissions[tag];
  const replaced = sub.replaces === undefined ? undefined : next.jobs[sub.replaces];
  if (replaced !== undefined) {
    delete replaced.replaced;
    if (replaced.successorTag === tag) delete replaced.successorTag;
  }
  return next;
}

/** Record the outcome of the tick's batched cancel; failed ids are planned again next tick. */
export function settleCancel(
  state: ReconcilerState,
  jobIds: readonly string[],
  ok: boolean,
): ReconcilerState {
  if (ok) return state;
  const next = clone(state);
  for (const id of jobIds) {
    const job = next.jobs[id];
    if (job !== undefined) {
      delete job.cancelRequestedAt;
      delete job.cancelReason;
      delete job.replaced;
    }
    const drain = next.jobDrains[id];
    if (drain !== undefined) delete drain.cancelRequestedAt;
  }
  return next;
}

/**
 * Record a failed release (`release.ts`): after a transient failure (the controller did not
 * answer) the next tick releases again; after a refusal (site policy, permissions) the next
 * tick cancels the job and the fill phase replaces it.
 */
export function settleRelease(
  state: ReconcilerState,
  jobIds: readonly string[],
  failure: ProviderFailure,
): ReconcilerState {
  const next = clone(state);
  for (const id of jobIds) {
    const job = next.jobs[id];
    if (job?.release === undefined) continue;
    if (failure.kind === 'transient') delete job.release;
    else job.release.refused = failure.message;
  }
  return next;
}

/** Clear a deployment's permanent error, backoff and launch-failure wait so it submits again. */
export function resumeDeployment(state: ReconcilerState, deployment: string): ReconcilerState {
  const next = clone(state);
  delete next.permanent[deployment];
  delete next.backoff[deployment];
  delete next.launchFailures[deployment];
  return next;
}
