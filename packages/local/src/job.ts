/**
 * The record of one local job and the pure rules over it: which states are final, the
 * SLURM-like environment a job's command gets, the final state of an exit, and how a job
 * looks to `list()`. No processes, files or timers here.
 */
import type { ChildProcess } from 'node:child_process';
import type { JobState, NodeRequest, ObservedJob } from '@es/pool';
import type { Termination } from '@es/proc';

/** Why the provider ended a job itself (absent when the job exited on its own). */
export type EndCause = 'cancel' | 'preempt' | 'timeout';

/** One job the provider knows: pending, running (spawned or adopted) or ended. */
export interface LocalJob {
  id: string;
  /** Value of `ES_LOCAL_JOB` in every process of the job: our stand-in for SLURM's cgroup. */
  key: string;
  request: NodeRequest;
  state: JobState;
  reason: string;
  submitTime: number;
  startTime?: number;
  endTime?: number;
  node?: number;
  child?: ChildProcess;
  pgid?: number;
  endCause?: EndCause;
  timers: ReturnType<typeof setTimeout>[];
  /** The SIGTERM → SIGKILL of a cancel, preemption or time limit, until the job ends. */
  termination?: Termination;
  exited?: Promise<void>;
}

/** Environment variable marking every process of a local job (inherited by its children). */
export const JOB_KEY_ENV = 'ES_LOCAL_JOB';

/** The states a job does not leave. */
export const ENDED: ReadonlySet<JobState> = new Set<JobState>([
  'COMPLETED',
  'CANCELLED',
  'FAILED',
  'TIMEOUT',
  'PREEMPTED',
]);

/** Where a job runs: its node's name and the GPU ids it gets there. */
export interface JobPlacement {
  nodeName: string;
  gpus: number[];
}

/** The environment of a job's command: `baseEnv`, then `request.env`, then SLURM's variables. */
export function jobEnv(
  job: LocalJob,
  baseEnv: NodeJS.ProcessEnv,
  placement: JobPlacement,
): NodeJS.ProcessEnv {
  const { nodeName, gpus } = placement;
  return {
    ...baseEnv,
    ...job.request.env,
    [JOB_KEY_ENV]: job.key,
    SLURM_JOB_ID: job.id,
    SLURM_JOBID: job.id,
    SLURM_JOB_NAME: job.request.name,
    SLURM_RESTART_COUNT: '0',
    SLURMD_NODENAME: nodeName,
    SLURM_JOB_NODELIST: nodeName,
    SLURM_GPUS_ON_NODE: String(gpus.length),
    CUDA_VISIBLE_DEVICES: gpus.join(','),
  };
}

/** A job's final state from its end cause, else from its exit code and signal. */
export function finalState(
  job: LocalJob,
  code: number | null,
  signal: NodeJS.Signals | null,
): { state: JobState; reason: string; endCauseKnown: boolean } {
  if (job.endCause === 'cancel') return { state: 'CANCELLED', reason: '', endCauseKnown: true };
  if (job.endCause === 'preempt') return { state: 'PREEMPTED', reason: '', endCauseKnown: true };
  if (job.endCause === 'timeout') {
    return { state: 'TIMEOUT', reason: 'TimeLimit', endCauseKnown: true };
  }
  if (code === 0) return { state: 'COMPLETED', reason: '', endCauseKnown: false };
  return {
    state: 'FAILED',
    reason: signal !== null ? `RaisedSignal:${signal}` : `NonZeroExitCode:${code ?? '?'}`,
    endCauseKnown: false,
  };
}

/** How `list()` shows a job; node `i` is named `<prefix>-<i>`. */
export function observeJob(job: LocalJob, prefix: string, now: () => number): ObservedJob {
  const observed: ObservedJob = {
    id: job.id,
    name: job.request.name,
    tag: job.request.tag,
    state: job.state,
    reason: job.reason,
    nodes: job.node === undefined ? '' : `${prefix}-${job.node}`,
    restartCount: 0,
    submitTime: job.submitTime,
  };
  if (job.startTime !== undefined) observed.startTime = job.startTime;
  const limit = job.request.timeLimitMinutes;
  if (limit !== undefined && !ENDED.has(job.state)) {
    const elapsed = job.startTime === undefined ? 0 : now() - job.startTime;
    observed.timeLeftSeconds = Math.max(0, Math.ceil((limit * 60_000 - elapsed) / 1000));
  }
  return observed;
}
