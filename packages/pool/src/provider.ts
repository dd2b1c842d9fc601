/**
 * The interface between the reconciler and a cluster. Implemented by `@es/slurm`
 * (`createSlurmProvider`) and by the local provider in this package (worker processes
 * on this machine). The reconciler talks to a cluster only through it.
 */

/** Job states as SLURM names them (the local provider uses the same names). */
export type JobState =
  | 'PENDING'
  | 'CONFIGURING'
  | 'RUNNING'
  | 'COMPLETING'
  | 'COMPLETED'
  | 'CANCELLED'
  | 'FAILED'
  | 'TIMEOUT'
  | 'PREEMPTED'
  | 'NODE_FAIL'
  | 'BOOT_FAIL'
  | 'DEADLINE'
  | 'OUT_OF_MEMORY'
  | 'SUSPENDED'
  | 'STOPPED'
  | 'REQUEUED'
  | 'REQUEUE_HOLD'
  | 'REQUEUE_FED'
  | 'RESIZING'
  | 'SIGNALING'
  | 'SPECIAL_EXIT'
  | 'STAGE_OUT'
  | 'REVOKED'
  | 'RESV_DEL_HOLD'
  | 'UNKNOWN';

/** Cluster-specific options of a node request (SLURM flags; ignored by the local provider). */
export interface ClusterOptions {
  partition?: string;
  qos?: string;
  account?: string;
  constraint?: string;
  exclusive?: boolean;
  /** Extra `#SBATCH` flags, e.g. `--mem=0`. */
  extraSbatch?: string[];
  /** Shell lines run before the worker starts (e.g. `conda activate myenv`). */
  setup?: string[];
  /** `--signal`, e.g. `B:USR1@120`. */
  signal?: string;
  /** Ask SLURM to requeue the job when it is preempted (default true). */
  requeue?: boolean;
}

/** One single-node job the reconciler wants. */
export interface NodeRequest {
  /** Deployment this node serves. */
  deployment: string;
  /** Job name (`--job-name`), shared by all jobs of one scheduler + deployment. */
  name: string;
  /** Unique tag for this submission (`--comment`): finds the job after an ambiguous failure. */
  tag: string;
  gpusPerNode: number;
  /** Time limit in minutes, if any. */
  timeLimitMinutes?: number;
  /** The worker command (argv[0] is the executable). Never passed through a shell unquoted. */
  command: string[];
  /** Environment for the worker. */
  env: Record<string, string>;
  /** Directory for the job's script and stdout/stderr. */
  logDir: string;
  cluster?: ClusterOptions;
}

/** A job as the cluster reports it. */
export interface ObservedJob {
  id: string;
  name: string;
  /** The `--comment` tag it was submitted with. */
  tag: string;
  state: JobState;
  /** SLURM's reason (e.g. `Priority`, `BeginTime`, `launch failed requeued held`), or '' . */
  reason: string;
  /** Node list, '' while pending. */
  nodes: string;
  /** Restart count (0 when never requeued). */
  restartCount: number;
  /** Seconds left before the time limit, when known. */
  timeLeftSeconds?: number;
  /** Start time (ms since epoch), when started. */
  startTime?: number;
  /** Submit time (ms since epoch), when known. */
  submitTime?: number;
}

/** Which jobs `list` returns. */
export interface ListFilter {
  /** Job names to include (all of this scheduler's deployments). */
  names: string[];
}

/** How a provider failure should be handled. */
export type FailureKind = 'transient' | 'policy' | 'permanent';

/**
 * Errors thrown by providers carry a classification; `ambiguous` means the call may have
 * taken effect (e.g. sbatch timed out after the controller accepted the job).
 */
export interface ProviderFailure {
  kind: FailureKind;
  ambiguous: boolean;
  message: string;
}

/** Reads the classification of a provider error (unknown errors are transient). */
export function classifyProviderError(error: unknown): ProviderFailure {
  const e = error as { kind?: unknown; ambiguous?: unknown; message?: unknown } | null;
  const kind: FailureKind =
    e && (e.kind === 'transient' || e.kind === 'policy' || e.kind === 'permanent')
      ? e.kind
      : 'transient';
  return {
    kind,
    ambiguous: Boolean(e?.ambiguous),
    message: typeof e?.message === 'string' ? e.message : String(error),
  };
}

/** A cluster the reconciler can acquire nodes from. */
export interface NodeProvider {
  /** `slurm` or `local`. */
  readonly kind: string;
  /** Submit one job; resolves to its id. Throws a classified error on failure. */
  submit(request: NodeRequest): Promise<string>;
  /** ONE call listing every job with one of `filter.names`, including ones that just ended. */
  list(filter: ListFilter): Promise<ObservedJob[]>;
  /** Cancel jobs in ONE call. Unknown or ended ids are not an error. */
  cancel(ids: string[]): Promise<void>;
}
