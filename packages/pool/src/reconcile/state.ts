/**
 * What the reconciler remembers and decides with: its tuning, its state between ticks (plain
 * data), the input of one tick and the actions it plans. The phases in this folder read and
 * write these; the driver in `../reconciler.ts` performs the actions.
 */
import type { DeploymentConfig } from '../deployment.js';
import type { JobState, ObservedJob } from '../provider.js';
import type { PoolEventType, RegistrySnapshot, WorkerInfo } from '../registry.js';
import type { ScaleState } from '../scaling.js';

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
  /**
   * With a time limit, the successor is submitted this long before the end (default 15 min),
   * or a quarter of the limit when that is shorter.
   */
  leadTimeMs: number;
  /** A retiring job drained for its successor is cancelled when idle or after this (default 2 min). */
  drainGraceMs: number;
  /**
   * ... and at the latest this long before its time limit (default 30 s: the worker's drain
   * grace, 15 s by default, its hand-over and its kill grace fit before SLURM's kill).
   */
  timeLimitCancelMs: number;
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
  /**
   * Release a requeued job from the begin time SLURM gives it (about 120 s after the
   * requeue), so it starts at once on a free node (default true; see `release.ts`).
   */
  releaseRequeued: boolean;
  /**
   * A released job still waiting for its begin time this long after the release (the
   * release did not take effect) is cancelled and replaced (default 30 s).
   */
  releaseTimeoutMs: number;
}

/** Defaults of {@link ReconcileOptions} (without `schedulerId`). */
export const DEFAULT_RECONCILE_OPTIONS: Omit<ReconcileOptions, 'schedulerId'> = {
  startupTimeoutMs: 30 * 60_000,
  heartbeatTimeoutMs: 30_000,
  maxSubmitsPerTick: 4,
  leadTimeMs: 15 * 60_000,
  drainGraceMs: 120_000,
  timeLimitCancelMs: 30_000,
  jobDrainGraceMs: 60_000,
  transientInitialMs: 2_000,
  transientMaxMs: 60_000,
  policyRetryMs: 300_000,
  unlistedGraceMs: 60_000,
  endedRetentionMs: 600_000,
  releaseRequeued: true,
  releaseTimeoutMs: 30_000,
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
  /** A pending job's expected start (ms since epoch), as the cluster estimates it. */
  expectedStart?: number;
  /** The release of an incarnation from its requeue begin time (see `release.ts`). */
  release?: JobRelease;
}

/** One release of a requeued job from its begin time. */
export interface JobRelease {
  /** The incarnation released. */
  restartCount: number;
  /** When the release was planned. */
  at: number;
  /** Why the cluster refused it (it is then cancelled and replaced). */
  refused?: string;
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
  /** Drained for a lower demand-aware target: cancelled without a replacement. */
  scaleDown?: boolean;
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
   * Workers `planHeartbeatTimeouts` took out of routing since the last successful list,
   * with their last heartbeat and state then. The next successful list treats them as timing
   * out in its own tick: their silence still ends an unlisted job, and a ready one still
   * counts its job as having been ready.
   */
  timedOut: Record<string, { lastHeartbeat: number; state: WorkerInfo['state'] }>;
  /** Jobs operators drained, by job id, until their cancel is long past. */
  jobDrains: Record<string, JobDrain>;
  /** Demand-aware scaling, per deployment that scales (see `../scaling.ts`). */
  scaling: Record<string, ScaleState>;
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
    scaling: {},
  };
}

/** Input of `planReconcile`. */
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
  /** Requests waiting in the proxies for a worker, per deployment (demand-aware scaling). */
  queued?: Readonly<Record<string, number>>;
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
  /** Lift the requeue begin time of these pending jobs, in one provider call. */
  | { type: 'release'; jobs: { jobId: string; deployment: string }[] }
  | { type: 'note-incarnation'; deployment: string; jobId: string; restartCount: number }
  | { type: 'end-job'; deployment: string; jobId: string; reason: string; restartCount?: number }
  | { type: 'drain-job'; deployment: string; jobId: string; reason: string }
  | { type: 'worker-gone'; deployment: string; workerId: string; reason: string }
  | { type: 'forget-job'; deployment: string; jobId: string }
  | {
      type: 'event';
      event: { type: PoolEventType; deployment: string; jobId?: string; reason?: string };
    };

/** Output of `planReconcile`. */
export interface ReconcilePlan {
  state: ReconcilerState;
  actions: ReconcileAction[];
}

/** A deep copy of the state: every plan changes a copy, never its input. */
export function clone(state: ReconcilerState): ReconcilerState {
  return structuredClone(state);
}
