import type { EngineKind, EngineLoad, ReportedState } from '@es/protocol';
import type { Clock } from './clock.js';

/** A pino-compatible logger (object first, message second); all methods optional in use. */
export interface WorkerLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Options of {@link createWorker}. */
export interface WorkerOptions {
  /** Scheduler base URL, e.g. `http://login1:8780`. */
  schedulerUrl: string;
  /**
   * A file whose first line is the scheduler's current URL (`<log dir>/worker-url`: its
   * worker listener). While the scheduler is unreachable the worker re-reads it (at most once
   * a second) and follows a new URL: a scheduler requeued to another node or restarted on
   * another port finds its workers again (they register anew with it).
   */
  schedulerUrlFile?: string;
  /** Deployment this worker serves. */
  deployment: string;
  engine: EngineKind;
  model: string;
  /** SLURM job id (or the local provider's). */
  jobId: string;
  /** `SLURM_RESTART_COUNT` (default 0). */
  restartCount?: number;
  /**
   * Port of instance 0; instance i gets `basePort + i` unless taken (default 8001).
   * 0 = every instance takes a free port (many workers on one machine, tests).
   */
  basePort?: number;
  /** GPUs per engine instance (default 1). */
  tensorParallelSize?: number;
  /**
   * GPUs of this node when the job says nothing of its allocation (`--gpus-per-node`): the
   * GPUs SLURM allocated win (`visibleDevices`, else `gpusOnNode`); a different count is
   * logged. With none of the three, the worker does not start.
   */
  gpusPerNode?: number;
  /** `CUDA_VISIBLE_DEVICES` of the job: the ids of its GPUs (default: from `env`). */
  visibleDevices?: string;
  /** `SLURM_GPUS_ON_NODE` of the job: how many GPUs it got (default: from `env`). */
  gpusOnNode?: string;
  /** Default 0.9. */
  gpuMemoryUtilization?: number;
  maxModelLen?: number;
  servedModelName?: string;
  /** Extra engine arguments as one string (`--engine-extra-args`), split like a shell would. */
  engineExtraArgs?: string;
  /** Extra engine arguments, already split; appended after `engineExtraArgs`. */
  extraArgs?: readonly string[];
  /** Executable replacing the engine's default (for the mock: its script). */
  engineBin?: string;
  /**
   * Pass `--trust-remote-code` to vLLM and SGLang (default true, as the seed did): the model
   * repository's own Python code runs on the node. `--no-trust-remote-code` among the extra
   * engine arguments turns it off too.
   */
  trustRemoteCode?: boolean;
  /** Contents of the shared secret file: worker token and engine `--api-key` derive from it. */
  secret?: string;
  /** Address to bind and register (default: see `resolveAdvertiseHost`). */
  host?: string;
  /** Directory of the per-instance engine logs (default `$TMPDIR/es-worker-<jobId>`). */
  logDir?: string;
  /** Node name reported to the scheduler (default `SLURMD_NODENAME`, else the hostname). */
  node?: string;
  /** Environment the engines inherit (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** After the drain notice, how long in-flight requests may finish before engines get SIGTERM (ms, default 15000). */
  drainGraceMs?: number;
  /**
   * Hand-over margin (ms, default 5000, or half of `drainGraceMs` when that is under 10 s;
   * 0 <= margin < `drainGraceMs`, or 0): engines still busy this long before the drain grace
   * ends are handed over (one `handover` message for every instance), so the scheduler has
   * their generations continued elsewhere before the engines get SIGTERM.
   */
  handoverMarginMs?: number;
  /** SIGTERM → SIGKILL of an engine's process group (ms, default 5000). */
  killGraceMs?: number;
  /** Readiness poll interval while an engine loads, and liveness poll once ready (ms, default 1000). */
  probeIntervalMs?: number;
  /**
   * A ready engine that fails this many liveness probes in a row (no answer within
   * `livenessTimeoutMs`, or not 2xx) is reported not ready (`loading`, with the reason) so
   * the scheduler stops routing to it; it is ready again at the first good probe (default 3).
   */
  livenessFailures?: number;
  /** Timeout of one liveness probe (ms, default 2000). */
  livenessTimeoutMs?: number;
  /** An engine unresponsive this long is killed and restarted like a crash (ms, default 60000). */
  hungRestartMs?: number;
  /** First restart delay after an engine exits (ms, default 1000), doubling per crash. */
  restartBackoffMs?: number;
  /** Cap of the restart delay (ms, default 30000). */
  maxRestartBackoffMs?: number;
  /** Consecutive crashes after which an instance is reported `failed` and left alone (default 5). */
  maxRestarts?: number;
  /** An engine that stayed ready this long has its crash count reset (ms, default 60000). */
  stableAfterMs?: number;
  /** Timeout of each scheduler request (ms, default 5000; drain notices use at most 2000). */
  requestTimeoutMs?: number;
  logger?: WorkerLogger;
  /**
   * Time for every interval and deadline above (heartbeats, probes, backoff, hung-engine
   * restart, drain grace); default the real one (`systemClock`). Tests drive a fake.
   */
  clock?: Clock;
}

/** What one engine instance is doing, as {@link Worker.instances} shows it. */
export interface InstanceStatus {
  index: number;
  gpus: number[];
  port: number;
  state: ReportedState | 'starting' | 'stopped';
  workerId: string | undefined;
  pid: number | undefined;
  logFile: string;
  crashes: number;
  load: EngineLoad | undefined;
}

/** How the worker ended. */
export interface WorkerExit {
  /** Process exit code: 0 after a drain/stop, 1 when fenced (409) or on a fatal error. */
  code: number;
  reason: string;
}

/** A running worker; see {@link createWorker}. */
export interface Worker {
  /** Plans slices, starts the engines and registers them; resolves once all are registered. */
  start(): Promise<void>;
  /** Drain notices first, then engines stopped, then deregistration. Idempotent. */
  stop(reason?: string): Promise<WorkerExit>;
  /** Resolves when the worker has stopped for any reason (stop, fencing, fatal error). */
  readonly done: Promise<WorkerExit>;
  /** Snapshot of every instance. */
  instances(): InstanceStatus[];
  /** Last-resort cleanup for `exit`/`uncaughtException` handlers: SIGKILL every engine group now. */
  killEnginesSync(): void;
}
