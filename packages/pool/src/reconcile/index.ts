/**
 * The reconciler's decision logic: a pure function of (observed jobs, registry snapshot,
 * deployment configs, its own remembered state, now) → actions and the next state. The
 * driver in `../reconciler.ts` performs the actions; nothing here does I/O or reads a clock.
 * Operator commands enter the same way: a new `maxNodes` through the deployment configs, a
 * job drain through the state (`planJobDrain`); what they cancel, and when, is planned here.
 *
 * `planReconcile` runs the phases of one tick in a fixed order, each in a file of its own:
 * liveness, reading the list, tracking the listed jobs, jobs absent from the list, operator
 * drains, running jobs (with their time limits), requeued jobs released from SLURM's begin
 * time, the demand-aware target (`scale.ts`), filling up to the target, and last the batched
 * cancel. The driver reports outcomes back through `submissions.ts`.
 */
import { cancelDrainedJobs } from './drains.js';
import { fillDeployments } from './fill.js';
import { readList } from './list.js';
import { timeOutSilentWorkers } from './liveness.js';
import { releaseRequeuedJobs } from './release.js';
import { scaleDeployments } from './scale.js';
import { judgeRunningJobs } from './running.js';
import type { ReconcileInput, ReconcilePlan } from './state.js';
import { startTick } from './tick.js';
import { trackListedJobs } from './track.js';
import { endUnlistedJobs, endVanishedJobs } from './unlisted.js';

export { jobDrainDue, planJobDrain } from './drains.js';
export type { JobDrainRequest } from './drains.js';
export { scaleDownOrder, submissionTag } from './fill.js';
export { loadSample, scalesWithDemand } from './scale.js';
export { isHeld, isLiveState } from './job-states.js';
export { planHeartbeatTimeouts } from './liveness.js';
export { waitsForRequeueDelay } from './release.js';
export type { HeartbeatTimeoutInput } from './liveness.js';
export { DEFAULT_RECONCILE_OPTIONS, initialReconcilerState } from './state.js';
export type {
  BackoffState,
  CancelItem,
  JobDrain,
  JobRelease,
  ReconcileAction,
  ReconcileInput,
  ReconcileOptions,
  ReconcilePlan,
  ReconcilerState,
  SubmissionRecord,
  TrackedJob,
} from './state.js';
export {
  abandonSubmission,
  resumeDeployment,
  settleCancel,
  settleRelease,
  settleSubmission,
} from './submissions.js';
export type { SubmitOutcome } from './submissions.js';

/**
 * Plan one reconcile tick. Pure: same input, same output.
 * @example
 * const { actions, state } = planReconcile({ now, deployments, observed, observedAt: now,
 *   registry: registry.snapshot(), state: previous, options });
 */
export function planReconcile(input: ReconcileInput): ReconcilePlan {
  const tick = startTick(input);
  // Heartbeat timeouts do not depend on the cluster: serving continues even when the list fails.
  timeOutSilentWorkers(tick);
  if (input.observed === 'unknown') {
    // Unknown is not lost: nothing is cancelled, forgotten or resubmitted on a failed list.
    tick.next.listFailures++;
    return { state: tick.next, actions: tick.actions };
  }
  const listed = readList(tick, input.observed);
  trackListedJobs(listed);
  endVanishedJobs(listed);
  endUnlistedJobs(listed);
  cancelDrainedJobs(listed);
  judgeRunningJobs(listed);
  releaseRequeuedJobs(listed);
  scaleDeployments(listed);
  fillDeployments(listed);
  if (listed.cancels.length > 0) listed.actions.push({ type: 'cancel', jobs: listed.cancels });
  return { state: listed.next, actions: listed.actions };
}
