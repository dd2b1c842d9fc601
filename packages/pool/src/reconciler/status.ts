/**
 * The reconciler's read model: the status of each deployment (jobs as the planner tracks
 * them, workers as the registry has them, backoff, permanent errors, launch failures,
 * recent provider errors), built on demand from the reconciler's state. Reads only.
 */
import { jobNameFor } from '../deployment.js';
import { isLiveState } from '../reconcile/index.js';
import type { WorkerInfo, WorkerState } from '../registry.js';
import type { ReconcilerContext } from './context.js';
import { scalingPolicy, type ScalingPolicy } from '../scaling.js';

/** A job as the status view shows it. */
export interface JobStatus {
  jobId: string;
  tag: string;
  state: string;
  reason: string;
  nodes: string;
  restartCount: number;
  /** Seconds since this scheduler first saw the job. */
  ageSeconds: number;
  /** Seconds before the time limit, when the cluster reports it. */
  timeLeftSeconds?: number;
  /** Seconds since the job's current incarnation was seen RUNNING. */
  runningSeconds?: number;
  /** Draining for a time-limit successor. */
  retiring: boolean;
  /** A worker announced a drain (preemption, scancel ...). */
  drained: boolean;
  /** Why the reconciler cancelled it. */
  cancelReason?: string;
  /** When it ended (ms), if it has. */
  endedAt?: number;
  /** A pending job's expected start (ms since epoch), when the cluster estimates one. */
  expectedStart?: number;
  /** When its current incarnation was released from SLURM's requeue begin time (ms). */
  releasedAt?: number;
  workers: { id: string; state: WorkerState }[];
}

/** One deployment in the status view. */
export interface DeploymentStatus {
  name: string;
  jobName: string;
  maxNodes: number;
  jobs: JobStatus[];
  workers: WorkerInfo[];
  readyWorkers: number;
  /** Submissions in flight or waiting to be seen in a list (ambiguous failures included). */
  submitting: number;
  backoff?: { kind: 'transient' | 'policy'; until: number; attempts: number; message: string };
  /** Set when a permanent failure stopped submissions (call `resume` after fixing it). */
  permanentError?: string;
  /**
   * Set while the deployment's jobs keep ending before any worker is ready: how many in a
   * row, the last one, how it ended, and when the next replacement may be submitted.
   */
  launchFailures?: { count: number; until: number; lastJobId: string; message: string };
  /** Most recent provider errors, oldest first. */
  lastErrors: { at: number; action: string; message: string }[];
  /** Set when the deployment scales with its load (`minNodes` below `maxNodes`). */
  scaling?: ScalingStatus;
}

/** A deployment's demand-aware scaling as the status view shows it. */
export interface ScalingStatus {
  minNodes: number;
  /** Node jobs it should hold now, between `minNodes` and `maxNodes`. */
  target: number;
  /** Mean load over the window (requests in flight and queued), and the nodes it needs. */
  load: number;
  need: number;
  kvCacheUsage?: number;
  /** The policy in force (defaults filled in). */
  policy: ScalingPolicy;
  /** Since when the need has been above (below) the target: the target moves after the delay. */
  upSince?: number;
  downSince?: number;
  /** When the target last changed (ms). */
  changedAt?: number;
}

/** The reconciler's read model. */
export interface ReconcilerStatus {
  schedulerId: string;
  provider: string;
  running: boolean;
  lastTickAt?: number;
  lastListAt?: number;
  /** Consecutive failed lists (the cluster state is "unknown" meanwhile). */
  listFailures: number;
  lastListError?: string;
  deployments: DeploymentStatus[];
}

/** The status of every deployment now. */
export function buildStatus(ctx: ReconcilerContext): ReconcilerStatus {
  const { registry, schedulerId, state } = ctx;
  const at = ctx.now();
  const deployments: DeploymentStatus[] = registry.deploymentConfigs().map((d) => {
    const workers = registry.workers(d.name);
    const jobs: JobStatus[] = Object.values(state.jobs)
      .filter((j) => j.deployment === d.name)
      .map((j) => {
        const status: JobStatus = {
          jobId: j.jobId,
          tag: j.tag,
          state: j.state,
          reason: j.reason,
          nodes: j.nodes,
          restartCount: j.restartCount,
          ageSeconds: Math.round((at - Math.min(j.firstSeen, j.submitTime ?? j.firstSeen)) / 1000),
          retiring: j.retiringSince !== undefined,
          drained: j.drainedAt !== undefined,
          workers: workers
            .filter((w) => w.jobId === j.jobId)
            .map((w) => ({ id: w.id, state: w.state })),
        };
        if (j.timeLeftSeconds !== undefined && isLiveState(j.state)) {
          status.timeLeftSeconds = Math.max(
            0,
            Math.round(j.timeLeftSeconds - (at - j.lastSeen) / 1000),
          );
        }
        if (j.runningSince !== undefined)
          status.runningSeconds = Math.round((at - j.runningSince) / 1000);
        if (j.cancelReason !== undefined) status.cancelReason = j.cancelReason;
        if (j.endedAt !== undefined) status.endedAt = j.endedAt;
        if (j.expectedStart !== undefined && j.state === 'PENDING') {
          status.expectedStart = j.expectedStart;
        }
        if (j.release !== undefined && j.release.restartCount === j.restartCount) {
          status.releasedAt = j.release.at;
        }
        return status;
      });
    const out: DeploymentStatus = {
      name: d.name,
      jobName: jobNameFor(schedulerId, d.name),
      maxNodes: d.maxNodes,
      jobs,
      workers,
      readyWorkers: workers.filter((w) => w.state === 'ready').length,
      submitting: Object.values(state.submissions).filter((s) => s.deployment === d.name).length,
      lastErrors: [...(ctx.errors.get(d.name) ?? [])],
    };
    const backoff = state.backoff[d.name];
    if (backoff !== undefined && backoff.until > at) {
      out.backoff = {
        kind: backoff.kind,
        until: backoff.until,
        attempts: backoff.attempts,
        message: backoff.message,
      };
    }
    const permanent = state.permanent[d.name];
    if (permanent !== undefined) out.permanentError = permanent.message;
    const launch = state.launchFailures[d.name];
    if (launch !== undefined) out.launchFailures = { ...launch };
    const scale = state.scaling[d.name];
    if (scale !== undefined && d.minNodes !== undefined) {
      const scaling: ScalingStatus = {
        minNodes: d.minNodes,
        target: scale.target,
        load: scale.load ?? 0,
        need: scale.need ?? scale.target,
        policy: scalingPolicy(d.scaling),
      };
      if (scale.kvCacheUsage !== undefined) scaling.kvCacheUsage = scale.kvCacheUsage;
      if (scale.upSince !== undefined) scaling.upSince = scale.upSince;
      if (scale.downSince !== undefined) scaling.downSince = scale.downSince;
      if (scale.changedAt !== undefined) scaling.changedAt = scale.changedAt;
      out.scaling = scaling;
    }
    return out;
  });
  const status: ReconcilerStatus = {
    schedulerId,
    provider: ctx.provider.kind,
    running: ctx.running,
    listFailures: state.listFailures,
    deployments,
  };
  if (ctx.lastTickAt !== undefined) status.lastTickAt = ctx.lastTickAt;
  if (state.lastListAt !== undefined) status.lastListAt = state.lastListAt;
  if (ctx.lastListError !== undefined) status.lastListError = ctx.lastListError;
  return status;
}
