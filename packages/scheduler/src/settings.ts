/**
 * What a scheduler is started with: its settings and those of each deployment it serves,
 * the defaults, and the error a wrong setting is reported with. `resolveConfig` builds them
 * from flags and a config file; an embedder may build them by hand.
 */
import { availableParallelism } from 'node:os';
import type { EngineKind } from '@es/protocol';
import type { RoutingPolicy, ScalingPolicy } from '@es/pool';
import { EsError } from '@es/protocol';

/** How node jobs are run: SLURM, local processes, or SLURM when `sbatch` is on the PATH. */
export const BACKENDS = ['auto', 'slurm', 'local'] as const;

export type Backend = (typeof BACKENDS)[number];

/** Everything that describes one served model. */
export interface DeploymentSettings {
  name: string;
  model: string;
  servedModelName?: string;
  engine: EngineKind;
  maxNodes: number;
  /**
   * Fewest nodes held whatever the demand; unset: `maxNodes` (always hold them). Below it,
   * the deployment scales with its load (`scaling`); 0 scales to zero.
   */
  minNodes?: number;
  /** How it follows its load (`@es/pool`'s `ScalingPolicy`; unset fields: its defaults). */
  scaling?: Partial<ScalingPolicy>;
  gpusPerNode: number;
  tensorParallelSize: number;
  gpuMemoryUtilization: number;
  maxModelLen?: number;
  engineExtraArgs: string;
  workerBasePort: number;
  routing: RoutingPolicy;
  /** SLURM time limit as given (`4:00:00`, `1-00:00:00`, `90`). */
  timeLimit?: string;
  timeLimitMinutes?: number;
  partition?: string;
  qos?: string;
  account?: string;
  constraint?: string;
  exclusive: boolean;
  /**
   * Whole nodes with every GPU on them: `gpusPerNode` is the fewest GPUs a node must have,
   * and each worker runs as many engines as its node's GPUs hold (`--whole-node-gpus`).
   */
  wholeNodeGpus?: boolean;
  /** Extra sbatch flags, one per entry (the CLI's `--slurm-extra` is `;`-separated). */
  slurmExtra: string[];
  condaEnv?: string;
  /** A virtualenv to activate on the nodes (alternative to `condaEnv`). */
  venvPath?: string;
  /** Extra shell lines run in the batch script before the worker starts. */
  setup: string[];
  /**
   * The workers' `--drain-grace` (seconds in-flight requests may finish after SIGTERM);
   * unset: the worker's default, 15. Keep it a few seconds under the partition's
   * preemption GraceTime.
   */
  drainGrace?: number;
  /**
   * The workers' `--handover-margin` (seconds before the end of the drain grace at which
   * the generations still running are continued elsewhere); unset: the worker's default
   * (5, or half of the drain grace when that is under 10).
   */
  handoverMargin?: number;
  /**
   * The seed's `enable_prefix_caching`: `false` adds the engine's switch that turns its
   * prefix cache off (vLLM `--no-enable-prefix-caching`, SGLang `--disable-radix-cache`) to
   * `engineExtraArgs`; unset or `true`: the engine's default (on).
   */
  enablePrefixCaching?: boolean;
}

export interface SchedulerSettings {
  host: string;
  port: number;
  /**
   * Port of the worker protocol's own listener, served from a thread of its own so that
   * heartbeats are answered however busy the client port is (0 = any free port; workers
   * find it in `<log-dir>/worker-url`).
   */
  workerPort: number;
  /**
   * Processes of the data plane (`es-proxy --processes N`) serving the client port `port`,
   * started detached so that they outlive this scheduler; 0: the client port is served in
   * this process, as before the data plane was separate. Unset: 0 (resolveConfig sets the
   * command line's default, {@link defaultProxyProcesses}).
   */
  proxyProcesses?: number;
  /**
   * Port of the scheduler's own listener (admin API, worker protocol mount, /metrics,
   * /dashboard, the routing watch stream, data-plane reports) when `proxyProcesses` >= 1
   * (0 = any free port; the data plane finds it in `<log-dir>/control-url`).
   */
  controlPort?: number;
  backend: Backend;
  /**
   * Client keys for `/v1/*` (`--api-key`, the lines of `--api-key-file`, `ES_API_KEYS` and
   * `ES_API_KEY`, comma-separated); empty = no client auth.
   */
  apiKeys: string[];
  /**
   * Origins whose web pages may call `/v1/*` from a browser (`--cors-origin`, repeatable;
   * `cors_origin` in a file, a string or a list), normalised, `*` for any; empty = CORS off.
   */
  corsOrigins: string[];
  /**
   * Admin key (`--admin-key`, `--admin-key-file`, `ES_ADMIN_KEY`); when unset, the admin
   * token derived from the secret is accepted.
   */
  adminKey?: string;
  /** Shared secret file (0600) from which worker and engine keys are derived. */
  secretFile?: string;
  logDir: string;
  heartbeatTimeoutS: number;
  healthCheckIntervalS: number;
  nodeAcquireIntervalS: number;
  /** A job that runs but registers no worker within this many seconds is cancelled. */
  startupTimeoutS: number;
  /** Number of simulated nodes for the local backend. */
  localNodes: number;
  /** Identifies this scheduler's jobs (job name prefix), so a restart re-adopts them. */
  schedulerId: string;
  /** Cancel all of this scheduler's jobs when it stops (default: leave them to be re-adopted). */
  cancelOnExit: boolean;
  /** Lift SLURM's requeue begin time of a preempted job so it starts at once (default true). */
  releaseRequeued: boolean;
  /** Send engine addresses to clients as `x-elastic-selected-endpoint` (default false). */
  exposeSelectedEndpoint: boolean;
  /** Continuations of one cut generation on other workers; 0 turns continuation off. */
  maxContinuations: number;
  /** A started generation silent this long is cut and continued elsewhere (0 = never). */
  stallTimeoutS: number;
  /** Open connections to the scheduler's port at most (0 = no cap). */
  maxConnections: number;
  /** MiB of memory for request bodies, all requests together (each charged 4 × its size). */
  bodyBudgetMb: number;
  /** A client that reads nothing of its response this long is cut (0 = never). */
  clientIdleTimeoutS: number;
  /**
   * Longest wait of a request for a deployment that scales from zero (`minNodes` 0) while it
   * has no worker: a node is started and its model loaded meanwhile (default 540: under the openai client's 10 min timeout, so it sees the 503 and its Retry-After rather than timing out and retrying).
   */
  coldStartWaitS: number;
  /**
   * The seed's `project_root`: the checkout of this project whose worker
   * (`<projectRoot>/apps/worker/dist/cli.mjs`) the node jobs run, at the same path on the
   * nodes (a shared file system). Unset: the checkout this scheduler runs from. A
   * `project_root` without that file (the original Python tool's checkout, as its config
   * files name it) is ignored with a warning.
   */
  projectRoot?: string;
  /** Things the operator should know that do not stop the start (logged as warnings). */
  warnings?: string[];
  deployments: DeploymentSettings[];
}

/** A configuration problem, with the field that is wrong and how to fix it. */
export class ConfigError extends EsError<'invalid_config'> {
  override readonly name = 'ConfigError';
  constructor(message: string, param?: string) {
    super('invalid_config', message, { param });
  }
}

/**
 * The default of `--proxy-processes`: half the cores this process may use, at least 1 and
 * at most 4 (the scheduler, the workers' thread and the machine's other work keep the rest).
 */
export function defaultProxyProcesses(cores: number = availableParallelism()): number {
  return Math.max(1, Math.min(4, Math.floor(cores / 2)));
}

/** Where a checkout of this project keeps the worker binary the node jobs run. */
export const WORKER_CLI_PATH = 'apps/worker/dist/cli.mjs';

/** The value of every setting neither the flags nor the config file give. */
export const DEFAULTS = {
  port: 8780,
  backend: 'auto' as Backend,
  logDir: 'logs',
  /** The least heartbeat timeout: the default is max(this, 3 × the interval). */
  heartbeatTimeoutS: 30,
  maxContinuations: 3,
  stallTimeoutS: 30,
  maxConnections: 16_384,
  bodyBudgetMb: 128,
  clientIdleTimeoutS: 60,
  coldStartWaitS: 540,
  healthCheckIntervalS: 5,
  nodeAcquireIntervalS: 10,
  startupTimeoutS: 1800,
  localNodes: 4,
  schedulerId: 'es',
  cancelOnExit: false,
  releaseRequeued: true,
  exposeSelectedEndpoint: false,
  engine: 'vllm' as EngineKind,
  maxNodes: 1,
  gpusPerNode: 8,
  tensorParallelSize: 1,
  gpuMemoryUtilization: 0.9,
  engineExtraArgs: '',
  workerBasePort: 8001,
  routing: 'least-outstanding' as const,
};
