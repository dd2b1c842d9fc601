/** Which job and worker states count as what, for every phase of the plan. */
import type { JobState, ObservedJob } from '../provider.js';

const LIVE: ReadonlySet<JobState> = new Set<JobState>([
  'PENDING',
  'CONFIGURING',
  'RUNNING',
  'COMPLETING',
  'SUSPENDED',
  'STOPPED',
  'REQUEUED',
  'REQUEUE_FED',
  'REQUEUE_HOLD',
  'RESIZING',
  'SIGNALING',
  'STAGE_OUT',
  'RESV_DEL_HOLD',
  'UNKNOWN',
]);

/** States in which a job failed (its deployment may be failing at launch). */
export const FAILED: ReadonlySet<JobState> = new Set<JobState>([
  'FAILED',
  'NODE_FAIL',
  'BOOT_FAIL',
  'OUT_OF_MEMORY',
  'DEADLINE',
  'SPECIAL_EXIT',
  'REVOKED',
]);

/** True for states in which a job may still run (pending, running, requeued, held ...). */
export function isLiveState(state: JobState): boolean {
  return LIVE.has(state);
}

/**
 * True for a job that runs: RUNNING, or SIGNALING, slurmctld delivering it a signal (the
 * SIGTERM of a preemption with GraceTime among them). A signalled job runs on: its workers
 * hand their generations over and drain, and say so in their heartbeats; taking them out
 * when squeue shows the signal would cut those generations instead.
 */
export function isRunning(state: JobState): boolean {
  return state === 'RUNNING' || state === 'SIGNALING';
}

/** A held job will not start by itself: launch failures, admin or user holds. */
export function isHeld(job: Pick<ObservedJob, 'state' | 'reason'>): boolean {
  if (job.state === 'REQUEUE_HOLD' || job.state === 'RESV_DEL_HOLD') return true;
  return job.state === 'PENDING' && /held/i.test(job.reason);
}

/** Workers out of service for good: a heartbeat timeout or a failure took them out. */
export const RETIRED: ReadonlySet<string> = new Set(['gone', 'failed']);
/** Workers a scheduler-initiated drain takes out of routing (`JobLedger.drainJob`). */
export const DRAINABLE: ReadonlySet<string> = new Set(['starting', 'loading', 'ready']);
