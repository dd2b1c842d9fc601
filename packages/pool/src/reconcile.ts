/**
 * The reconciler's decision logic: a pure function of (observed jobs, registry snapshot,
 * deployment configs, its own remembered state, now) → actions and the next state. The
 * driver in `reconciler.ts` performs the actions; nothing here does I/O or reads a clock.
 * Operator commands enter the same way: a new `maxNodes` through the deployment configs, a
 * job drain through the state (`planJobDrain`); what they cancel, and when, is planned here.
 */
import type { DeploymentConfig } from './deployment.js';
import { jobNameFor } from './deployment.js';
import type { JobState, ObservedJob, ProviderFailure } from './provider.js';
import type { PoolEventType, RegistrySnapshot, WorkerInfo } from './registry.js';

/** Tuning of the reconciler (all durations in ms). */
export interface ReconcileOptions {
  /** Prefix of job names: `es-<schedulerId>-<deployment>`. */
  schedulerId: string;
  /** A running job with no registered worker after this long is cancelled (default 30 min). */
  startupTimeoutMs: number;
  /** A worker silent for this long is gone (default 30 s). */
  heartbeatTimeoutMs: number;
  /** Most submissions per tick, over all deployments (default 4). */
  maxSubmitsPerTick: number;
  /** With a time limit, the successor is submitted this long before the end (default 15 min). */
  leadTimeMs: number;
  /** A retiring job drained for its successor is cancelled when idle or after this (default 2 min). */
  drainGraceMs: number;
  /** A job an operator drained (`PoolOperator.drainJob`) is cancelled when idle or after this (default 60 s). */
  jobDrainGraceMs: number;
  /** First transient sbatch backoff (default 2 s), doubled per failure up to `transientMaxMs`. */
  transientInitialMs: number;
  /** Cap of the transient backoff (default 60 s). */
  transientMaxMs: number;
  /** After a policy refusal (QOS limits), retry when one of our jobs leaves or after this (default 5 min). */
  policyRetryMs: number;
  /**
   * A job the cluster does not list is ended once all its workers are silent (heartbeat
   * timeout) and it registered longer than this ago (default 60 s). Heartbeating workers of
   * an unlisted job (e.g. started by hand) keep serving.
   */
  unlistedGraceMs: number;
  /** Ended jobs stay in the status view this long (default 10 min). */
  endedRetentionMs: number;
}

/** Defaults of {@link ReconcileOptions} (without `schedulerId`). */
export const DEFAULT_RECONCILE_OPTIONS: Omit<ReconcileOptions, 'schedulerId'> = {
  startupTimeoutMs: 30 * 60_000,
  heartbeatTimeoutMs: 30_000,
  maxSubmitsPerTick: 4,
  leadTimeMs: 15 * 60_000,
  drainGraceMs: 120_000,
  jobDrainGraceMs: 60_000,
  transientInitialMs: 2_000,
  transientMaxMs: 60_000,
  policyRetryMs: 300_000,
  unlistedGraceMs: 60_000,
  endedRetentionMs: 600_000,
};

/** A submission this scheduler started and has not yet seen resolved in a list. */
export interface SubmissionRecord {
  tag: string;
  deployment: string;
  startedAt: number;
  /** When submit returned (or failed ambiguously). Unset while in flight. */
  settledAt?: number;
  jobId?: string;
  /** Failed in a way that may have taken effect: counted until a later list tells. */
  ambiguous?: boolean;
  /** The job this submission replaces (ended, cancelled, or retiring for its time limit). */
  replaces?: string;
}

/** Submission backoff of one deployment. */
export interface BackoffState {
  kind: 'transient' | 'policy';
  attempts: number;
  /** No submission before this time. */
  until: number;
  message: string;
  /** Policy backoff ends early when one of these jobs leaves. */
  waitForExit?: string[];
}

/** What the reconciler remembers about one job it has seen in a list. */
export interface TrackedJob {
  jobId: string;
  deployment: string;
  tag: string;
  state: JobState;
  reason: string;
  nodes: string;
  restartCount: number;
  firstSeen: number;
  lastSeen: number;
  timeLeftSeconds?: number;
  startTime?: number;
  submitTime?: number;
  /** When this scheduler saw the current incarnation RUNNING. */
  runningSince?: number;
  /** A worker of the current incarnation announced a drain (preemption, scancel, time limit). */
  drainedAt?: number;
  /** Within `leadTimeMs` of its time limit: no longer counted, a successor is wanted. */
  retiringSince?: number;
  /** Tag of the successor submitted for a retiring job. */
  successorTag?: string;
  /** The scheduler drained it because its successor is ready. */
  retireDrainAt?: number;
  cancelRequestedAt?: number;
  cancelReason?: string;
  endedAt?: number;
  /** A replacement was submitted for it (ended or cancelled jobs are replaced once). */
  replaced?: boolean;
  /** A worker of this job was seen `ready` at least once. */
  everReady?: boolean;
  /** Counted as a launch failure (it ended before any worker was ready). */
  launchFailed?: boolean;
}

/**
 * Consecutive jobs of one deployment that ended before any of their workers was ready (the
 * batch script failed, the worker could not start, every engine failed to load, the job was
 * held after a launch failure). Replacements back off like transient sbatch failures; the
 * first job that reaches `ready` resets it.
 */
export interface LaunchFailureState {
  count: number;
  /** No replacement is submitted before this time. */
  until: number;
  lastJobId: string;
  /** How the last one ended, e.g. `FAILED (NonZeroExitCode)`. */
  message: string;
}

/**
 * A job an operator drained: its workers left routing at `drainedAt`; it is cancelled once
 * they are idle or `jobDrainGraceMs` later, by the first tick whose list succeeds.
 */
export interface JobDrain {
  jobId: string;
  deployment: string;
  reason: string;
  drainedAt: number;
  /** Set when a tick planned the cancel (cleared again if the cancel failed). */
  cancelRequestedAt?: number;
}

/** Everything the reconciler remembers between ticks (plain data). */
export interface ReconcilerState {
  submissions: Record<string, SubmissionRecord>;
  backoff: Record<string, BackoffState>;
  /** Deployments that stopped submitting after a permanent failure, with the reason. */
  permanent: Record<string, { message: string; at: number }>;
  /** Deployments whose recent jobs failed at launch. */
  launchFailures: Record<string, LaunchFailureState>;
  jobs: Record<string, TrackedJob>;
  /** Start time of the last successful list. */
  lastListAt?: number;
  /** Consecutive failed lists. */
  listFailures: number;
  /** Submissions made so far (for unique tags). */
  seq: number;
  /**
   * Workers {@link planHeartbeatTimeouts} took out of routing since the last successful list,
   * with their last heartbeat and state then. The next successful list treats them as timing
   * out in its own tick: their silence still ends an unlisted job, and a ready one still
   * counts its job as having been ready.
   */
  timedOut: Record<string, { lastHeartbeat: number; state: WorkerInfo['state'] }>;
  /** Jobs operators drained, by job id, until their cancel is long past. */
  jobDrains: Record<string, JobDrain>;
}

/** An empty state, for the first tick. */
export function initialReconcilerState(): ReconcilerState {
  return {
    submissions: {},
    backoff: {},
    permanent: {},
    launchFailures: {},
    jobs: {},
    listFailures: 0,
    seq: 0,
    timedOut: {},
    jobDrains: {},
  };
}

/** Input of {@link planReconcile}. */
export interface ReconcileInput {
  now: number;
  deployments: readonly DeploymentConfig[];
  /** Jobs from ONE `provider.list`, or `'unknown'` when it failed. */
  observed: readonly ObservedJob[] | 'unknown';
  /** When that list call started. */
  observedAt: number;
  registry: RegistrySnapshot;
  state: ReconcilerState;
  options: ReconcileOptions;
  /** A number in [0, 1) that jitters the launch-failure backoff (default 0.5). */
  jitter?: number;
}

/** One cancellation in the tick's single batched cancel. */
export interface CancelItem {
  jobId: string;
  deployment: string;
  reason: string;
}

/** What the driver should do. */
export type ReconcileAction =
  | { type: 'submit'; deployment: string; tag: string; reason: string; replaces?: string }
  | { type: 'cancel'; jobs: CancelItem[] }
  | { type: 'note-incarnation'; deployment: string; jobId: string; restartCount: number }
  | { type: 'end-job'; deployment: string; jobId: string; reason: string; restartCount?: number }
  | { type: 'drain-job'; deployment: string; jobId: string; reason: string }
  | { type: 'worker-gone'; deployment: string; workerId: string; reason: string }
  | { type: 'forget-job'; deployment: string; jobId: string }
  | {
      type: 'event';
      event: { type: PoolEventType; deployment: string; jobId?: string; reason?: string };
    };

/** Output of {@link planReconcile}. */
export interface ReconcilePlan {
  state: ReconcilerState;
  actions: ReconcileAction[];
}

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

const FAILED: ReadonlySet<JobState> = new Set<JobState>([
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

/** A held job will not start by itself: launch failures, admin or user holds. */
export function isHeld(job: Pick<ObservedJob, 'state' | 'reason'>): boolean {
  if (job.state === 'REQUEUE_HOLD' || job.state === 'RESV_DEL_HOLD') return true;
  return job.state === 'PENDING' && /held/i.test(job.reason);
}

/** A unique `--comment` tag for one submission. */
export function submissionTag(
  schedulerId: string,
  deployment: string,
  now: number,
  seq: number,
): string {
  return `es:${schedulerId}:${deployment}:${now.toString(36)}.${seq.toString(36)}`;
}

function clone(state: ReconcilerState): ReconcilerState {
  return structuredClone(state);
}

const RETIRED: ReadonlySet<string> = new Set(['gone', 'failed']);
/** Workers a scheduler-initiated drain takes out of routing (`JobLedger.drainJob`). */
const DRAINABLE: ReadonlySet<string> = new Set(['starting', 'loading', 'ready']);

/**
 * Whether a job an operator drained may be cancelled now: none of its workers (still there,
 * not timing out now) has a request in flight, or `jobDrainGraceMs` passed since the drain.
 */
export function jobDrainDue(
  drain: JobDrain,
  workers: readonly WorkerInfo[],
  now: number,
  options: Pick<ReconcileOptions, 'jobDrainGraceMs'>,
  goneNow: ReadonlySet<string> = new Set(),
): boolean {
  if (now - drain.drainedAt > options.jobDrainGraceMs) return true;
  return !workers.some((w) => w.state !== 'gone' && !goneNow.has(w.id) && w.inFlight > 0);
}

type WorkerGone = Extract<ReconcileAction, { type: 'worker-gone' }>;

/** A `worker-gone` action for every worker still in service but silent for longer than the timeout. */
function silentWorkers(
  workers: readonly WorkerInfo[],
  now: number,
  heartbeatTimeoutMs: number,
): WorkerGone[] {
  const gone: WorkerGone[] = [];
  for (const w of workers) {
    if (RETIRED.has(w.state) || now - w.lastHeartbeat <= heartbeatTimeoutMs) continue;
    gone.push({
      type: 'worker-gone',
      deployment: w.deployment,
      workerId: w.id,
      reason: `no heartbeat for ${Math.round((now - w.lastHeartbeat) / 1000)} s`,
    });
  }
  return gone;
}

/** Input of {@link planHeartbeatTimeouts}. */
export interface HeartbeatTimeoutInput {
  now: number;
  /**
   * The registry's workers: all of them, or only those silent for longer than the timeout
   * (`JobLedger.silentWorkers(now - heartbeatTimeoutMs)`, which copies no other): the plan
   * is the same.
   */
  workers: readonly WorkerInfo[];
  state: ReconcilerState;
  options: Pick<ReconcileOptions, 'heartbeatTimeoutMs'>;
}

/**
 * The heartbeat timeouts alone, between ticks (pure). The reconciler checks them on a timer
 * of their own: a tick waits for `provider.list` (squeue), sbatch and scancel, which a busy
 * controller can stretch to tens of seconds, and a hung worker must not stay routable that
 * long. Each silent worker gets a `worker-gone` action and is remembered in
 * `state.timedOut` for the next successful list.
 * @example
 * const { actions, state } = planHeartbeatTimeouts({ now, state: previous, options,
 *   workers: registry.silentWorkers(now - options.heartbeatTimeoutMs) });
 */
export function planHeartbeatTimeouts(input: HeartbeatTimeoutInput): ReconcilePlan {
  const actions = silentWorkers(input.workers, input.now, input.options.heartbeatTimeoutMs);
  if (actions.length === 0) return { state: input.state, actions };
  const next = clone(input.state);
  const byId = new Map(input.workers.map((w) => [w.id, w]));
  for (const a of actions) {
    const w = byId.get(a.workerId);
    if (w !== undefined) next.timedOut[w.id] = { lastHeartbeat: w.lastHeartbeat, state: w.state };
  }
  return { state: next, actions };
}

/** What an operator's job drain asks for (see {@link planJobDrain}). */
export interface JobDrainRequest {
  jobId: string;
  deployment: string;
  reason: string;
  now: number;
}

/**
 * An operator drains a job (pure): its workers leave routing now (`drain-job`), and the job
 * is remembered so that the first tick that finds them idle (or `jobDrainGraceMs` later)
 * cancels it and submits its replacement, as it does for a job retired for its time limit.
 * Asked again while the cancel is pending, the first drain's time holds; asked again after
 * the cancel, the job is cancelled again.
 * @example
 * const { state, actions } = planJobDrain(previous, { jobId: '42', deployment: 'qwen',
 *   reason: 'drained by an operator', now });
 */
export function planJobDrain(state: ReconcilerState, request: JobDrainRequest): ReconcilePlan {
  const next = clone(state);
  const { jobId, deployment, reason, now } = request;
  const pending = next.jobDrains[jobId];
  if (pending === undefined || pending.cancelRequestedAt !== undefined) {
    next.jobDrains[jobId] = { jobId, deployment, reason, drainedAt: now };
  }
  return { state: next, actions: [{ type: 'drain-job', deployment, jobId, reason }] };
}

/**
 * Plan one reconcile tick. Pure: same input, same output.
 * @example
 * const { actions, state } = planReconcile({ now, deployments, observed, observedAt: now,
 *   registry: registry.snapshot(), state: previous, options });
 */
export function planReconcile(input: ReconcileInput): ReconcilePlan {
  const { now, options } = input;
  const next = clone(input.state);
  const actions: ReconcileAction[] = [];
  const event = (
    type: PoolEventType,
    deployment: string,
    jobId?: string,
    reason?: string,
  ): void => {
    const e: { type: PoolEventType; deployment: string; jobId?: string; reason?: string } = {
      type,
      deployment,
    };
    if (jobId !== undefined) e.jobId = jobId;
    if (reason !== undefined) e.reason = reason;
    actions.push({ type: 'event', event: e });
  };
  // A job that ended before any worker was ready: its replacement waits (capped doubling).
  const launchFailed = (tracked: TrackedJob, how: string): void => {
    if (tracked.everReady === true || tracked.launchFailed === true) return;
    tracked.launchFailed = true;
    const count = (next.launchFailures[tracked.deployment]?.count ?? 0) + 1;
    next.launchFailures[tracked.deployment] = {
      count,
      until: now + backoffDelay(options, count, input.jitter ?? 0.5),
      lastJobId: tracked.jobId,
      message: how,
    };
  };

  // Heartbeat timeouts do not depend on the cluster: serving continues even when the list fails.
  const goneNow = new Set<string>();
  for (const a of silentWorkers(input.registry.workers, now, options.heartbeatTimeoutMs)) {
    goneNow.add(a.workerId);
    actions.push(a);
  }
  // Workers the timer between ticks already took out count as timing out in this tick, as
  // what they were then, as long as their record is the one it took out (not one that
  // registered again since).
  const readyWhenTimedOut = new Set<string>();
  for (const w of input.registry.workers) {
    const out = next.timedOut[w.id];
    if (out === undefined || !RETIRED.has(w.state) || out.lastHeartbeat !== w.lastHeartbeat) {
      continue;
    }
    goneNow.add(w.id);
    if (out.state === 'ready') readyWhenTimedOut.add(w.id);
  }

  if (input.observed === 'unknown') {
    // Unknown is not lost: nothing is cancelled, forgotten or resubmitted on a failed list.
    next.listFailures++;
    return { state: next, actions };
  }
  const firstList = next.lastListAt === undefined;
  next.listFailures = 0;
  next.lastListAt = input.observedAt;
  next.timedOut = {};

  const byName = new Map<string, DeploymentConfig>();
  for (const d of input.deployments) byName.set(jobNameFor(options.schedulerId, d.name), d);
  const observed = new Map<string, ObservedJob & { deployment: string }>();
  const tagsSeen = new Set<string>();
  for (const job of input.observed) {
    const d = byName.get(job.name);
    if (d === undefined) continue;
    observed.set(job.id, { ...job, deployment: d.name });
    if (job.tag) tagsSeen.add(job.tag);
  }

  // Submissions are resolved by the first list that started after they settled.
  for (const [tag, sub] of Object.entries(next.submissions)) {
    const seen = tagsSeen.has(tag) || (sub.jobId !== undefined && observed.has(sub.jobId));
    const settledBefore = sub.settledAt !== undefined && sub.settledAt < input.observedAt;
    if (seen || settledBefore) delete next.submissions[tag];
  }

  const workersByJob = new Map<string, WorkerInfo[]>();
  for (const w of input.registry.workers) {
    let list = workersByJob.get(w.jobId);
    if (list === undefined) workersByJob.set(w.jobId, (list = []));
    list.push(w);
  }
  const registryJobs = new Map(input.registry.jobs.map((j) => [j.jobId, j]));

  // Track what the list shows.
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
      const ours = Object.values(input.state.submissions).some(
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
    const wasRunning = !isNew && tracked.state === 'RUNNING';
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
    if (job.state === 'RUNNING' && (!wasRunning || requeued)) {
      tracked.runningSince = now;
      event('running', job.deployment, job.id, job.nodes);
    }
    if (wasRunning && job.state !== 'RUNNING') {
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
  }

  // Jobs that vanished from the list have ended (the list succeeded: this is knowledge).
  // Their registry records stay (fencing late heartbeats) until the retention passes.
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

  // Jobs the cluster does not list: a worker started by hand outside our jobs, a job of
  // ours the controller does not list yet, or one that ended while this scheduler was down.
  // Only a known end or silence tells them apart: a job known to have ended leaves at once;
  // otherwise a worker that keeps heartbeating is alive wherever it runs, so the job is ended
  // (late heartbeats fenced) only once none of its workers heartbeated within the timeout and
  // it registered longer than the grace ago. Such jobs are never tracked, so they neither
  // count against maxNodes nor get cancelled or replaced.
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

  // Cancellations, batched. Whoever asks for one (a rule below, a lower maxNodes, an
  // operator), the job's workers still in service leave routing first: the `drain-job`
  // comes before the cancel and the driver applies it before any provider call, so no new
  // request starts on a node about to be signalled, and those in flight finish.
  const cancels: CancelItem[] = [];
  const cancelJob = (jobId: string, deployment: string, reason: string): void => {
    const inService = (workersByJob.get(jobId) ?? []).some(
      (w) => DRAINABLE.has(w.state) && !goneNow.has(w.id),
    );
    if (inService) actions.push({ type: 'drain-job', deployment, jobId, reason });
    cancels.push({ jobId, deployment, reason });
  };
  const cancel = (tracked: TrackedJob, reason: string) => {
    tracked.cancelRequestedAt = now;
    tracked.cancelReason = reason;
    cancelJob(tracked.jobId, tracked.deployment, reason);
  };

  // Jobs operators drained: cancelled (and replaced) once their workers are idle or the grace
  // is over. A job the cluster does not list (started by hand) is cancelled too: the
  // operator named it.
  for (const drain of Object.values(next.jobDrains)) {
    const tracked = next.jobs[drain.jobId];
    if (drain.cancelRequestedAt !== undefined) {
      if (now - drain.cancelRequestedAt > options.endedRetentionMs) {
        delete next.jobDrains[drain.jobId];
      }
      continue;
    }
    if (
      tracked?.endedAt !== undefined ||
      tracked?.cancelRequestedAt !== undefined ||
      (tracked === undefined && !registryJobs.has(drain.jobId))
    ) {
      // It ended, another rule cancels it, or it is forgotten: nothing left to do.
      delete next.jobDrains[drain.jobId];
      continue;
    }
    if (!jobDrainDue(drain, workersByJob.get(drain.jobId) ?? [], now, options, goneNow)) continue;
    drain.cancelRequestedAt = now;
    if (tracked !== undefined) cancel(tracked, drain.reason);
    else cancelJob(drain.jobId, drain.deployment, drain.reason);
  }

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
    if (job.state !== 'RUNNING') continue;
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
    // Time limit: retire ahead of the end so a successor is ready in time.
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
      leftMs <= options.leadTimeMs &&
      tracked.retiringSince === undefined
    ) {
      tracked.retiringSince = now;
    }
    if (tracked.retiringSince !== undefined && tracked.successorTag !== undefined) {
      if (tracked.retireDrainAt === undefined) {
        const successor = findJobByTag(next, tracked.successorTag);
        const ready =
          successor !== undefined &&
          (workersByJob.get(successor) ?? []).some(
            (w) => w.state === 'ready' && !goneNow.has(w.id),
          );
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
        if (
          (idle && now > tracked.retireDrainAt) ||
          now - tracked.retireDrainAt > options.drainGraceMs
        ) {
          cancel(tracked, 'time limit: drained for its successor');
        }
      }
    }
  }

  // Fill each deployment up to maxNodes, greedily but at most maxSubmitsPerTick per tick.
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

  if (cancels.length > 0) actions.push({ type: 'cancel', jobs: cancels });
  return { state: next, actions };
}

function findJobByTag(state: ReconcilerState, tag: string): string | undefined {
  for (const job of Object.values(state.jobs)) if (job.tag === tag) return job.jobId;
  return state.submissions[tag]?.jobId;
}

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
    until: now + backoffDelay(options, attempts, jitter),
    message: failure.message,
  };
  return next;
}

/**
 * The wait before attempt `attempts + 1`: `transientInitialMs` doubled per attempt, capped at
 * `transientMaxMs`, jittered into [half, full] by `jitter` in [0, 1).
 */
function backoffDelay(
  options: Pick<ReconcileOptions, 'transientInitialMs' | 'transientMaxMs'>,
  attempts: number,
  jitter: number,
): number {
  const base = Math.min(options.transientMaxMs, options.transientInitialMs * 2 ** (attempts - 1));
  return Math.round(base * (0.5 + 0.5 * jitter));
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

/** Clear a deployment's permanent error, backoff and launch-failure wait so it submits again. */
export function resumeDeployment(state: ReconcilerState, deployment: string): ReconcilerState {
  const next = clone(state);
  delete next.permanent[deployment];
  delete next.backoff[deployment];
  delete next.launchFailures[deployment];
  return next;
}
