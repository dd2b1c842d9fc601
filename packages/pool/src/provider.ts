/**
 * The interface between the reconciler and a cluster. Implemented by `@es/slurm`
 * (`createSlurmProvider`) and `@es/local` (`createLocalProvider`: worker processes on this
 * machine), side by side; both pass the conformance suite `describeNodeProvider` of
 * `@es/testkit`. The reconciler talks to a cluster only through it.
 */
import { EsError } from '@es/protocol';

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
  /**
   * Whole nodes with every GPU on them (for partitions whose nodes differ in GPU count): the
   * job lands on a node with at least `gpusPerNode` GPUs and gets all of them; its worker
   * plans its engines from what it got. SLURM: `--exclusive --gpus-per-node=<gpusPerNode>`.
   * Default false: exactly `gpusPerNode` GPUs.
   */
  wholeNodeGpus?: boolean;
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
  /**
   * A pending job's expected start (ms since epoch) as the cluster estimates it, when it
   * has one: for a requeued SLURM job, the begin time SLURM set (about 120 s after the
   * requeue).
   */
  expectedStart?: number;
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

/** Fields of a {@link ProviderError}. */
export interface ProviderErrorOptions {
  /** How the reconciler should react: retry later, back off until a limit frees up, or give up. */
  kind: FailureKind;
  /** True when the call may have taken effect (e.g. sbatch timed out after the job was accepted). */
  ambiguous?: boolean;
  /** The request field or option at fault, when there is one. */
  param?: string;
  cause?: unknown;
}

/**
 * The base of every error a {@link NodeProvider} throws: a `code` of the driver's own
 * (`slurm_policy_limit`, `unsatisfiable`, ...), a `kind` choosing the reconciler's backoff
 * and `ambiguous` when the call may have taken effect. Each driver extends it with its own
 * class (`SlurmError` in `@es/slurm`, `LocalProviderError` in `@es/local`) and fields.
 * @example
 * try {
 *   await provider.submit(request);
 * } catch (error) {
 *   if (isProviderError(error) && error.ambiguous) {
 *     // look the job up by its tag before submitting again
 *   }
 * }
 */
export class ProviderError<Code extends string = string> extends EsError<Code> {
  override readonly name: string = 'ProviderError';
  readonly kind: FailureKind;
  readonly ambiguous: boolean;

  constructor(code: Code, message: string, options: ProviderErrorOptions) {
    super(code, message, { param: options.param, cause: options.cause });
    this.kind = options.kind;
    this.ambiguous = options.ambiguous ?? false;
  }
}

/**
 * Whether `error` is a {@link ProviderError} (of any driver).
 * @example
 * if (isProviderError(error) && error.kind === 'permanent') stopSubmitting();
 */
export function isProviderError(error: unknown): error is ProviderError {
  return error instanceof ProviderError;
}

/**
 * Reads the classification of a provider error. A {@link ProviderError} is taken at its
 * word; a foreign error's `kind`/`ambiguous` fields are read when present, and an error
 * without a valid `kind` is transient.
 */
export function classifyProviderError(error: unknown): ProviderFailure {
  if (isProviderError(error)) {
    return { kind: error.kind, ambiguous: error.ambiguous, message: error.message };
  }
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
  /** Submit one job; resolves to its id. Throws a {@link ProviderError} on failure. */
  submit(request: NodeRequest): Promise<string>;
  /** ONE call listing every job with one of `filter.names`, including ones that just ended. */
  list(filter: ListFilter): Promise<ObservedJob[]>;
  /** Cancel jobs in ONE call. Unknown or ended ids are not an error. */
  cancel(ids: string[]): Promise<void>;
  /**
   * Let pending jobs start as soon as resources allow, lifting the begin time the cluster
   * gave them (SLURM delays a requeued job by about 120 s: `scontrol update JobId=<ids>
   * StartTime=now`), in ONE call. Throws a {@link ProviderError} when the cluster refuses
   * (e.g. by site policy); the reconciler then cancels and replaces the job. Optional: a
   * provider without begin times never lists a job that needs it.
   */
  release?(ids: string[]): Promise<void>;
}
