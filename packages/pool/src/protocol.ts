/**
 * The worker protocol: JSON over HTTP between a worker (one per SLURM job) and the
 * scheduler. Shared by `@es/worker` (client side) and the scheduler (server side, in
 * this package). Every request carries `Authorization: Bearer <workerToken>` where the
 * token is derived from the shared secret (see `deriveKeys`).
 *
 * Routes (all POST, JSON bodies, mounted on the scheduler's HTTP server):
 * - `/api/v1/workers/register`            RegisterRequest  → 200 RegisterResponse | 401 | 409 (fenced)
 * - `/api/v1/workers/:workerId/heartbeat` HeartbeatRequest → 200 HeartbeatResponse | 401 | 404 (unknown: register again) | 409 (fenced: exit)
 * - `/api/v1/workers/:workerId/drain`     DrainRequest     → 200 | 401 | 404
 * - `/api/v1/workers/:workerId/deregister` DeregisterRequest → 200 | 401 | 404
 *
 * Error bodies are `{ "error": { "message", "type", "code" } }`.
 */
import { createHmac } from 'node:crypto';

/** Base path of the worker protocol on the scheduler. */
export const WORKER_API_PREFIX = '/api/v1/workers';

/** Engines a worker can run. */
export type EngineKind = 'vllm' | 'sglang' | 'mock';

/** States a worker reports about one engine instance. */
export type ReportedState = 'loading' | 'ready' | 'draining' | 'failed';

/** Engine load, read by the worker from the engine's `/metrics`. */
export interface EngineLoad {
  /** Requests being generated right now. */
  running: number;
  /** Requests queued inside the engine. */
  waiting: number;
  /** KV-cache usage in [0, 1], when the engine reports it. */
  kvCacheUsage?: number;
}

export interface RegisterRequest {
  /** Name of the deployment this worker serves (the scheduler passes it in the job's env). */
  deployment: string;
  /** SLURM job id (or the local provider's job id). */
  jobId: string;
  /** `SLURM_RESTART_COUNT`, 0 when unset. (jobId, restartCount) is the incarnation. */
  restartCount: number;
  /** Index of the engine instance on this node (0-based, DP rank on the node). */
  index: number;
  host: string;
  port: number;
  /** GPU ids of this instance's slice (as in CUDA_VISIBLE_DEVICES). */
  gpus: number[];
  engine: EngineKind;
  /** Model path or hub id the engine serves. */
  model: string;
  /** Node name (SLURMD_NODENAME or hostname). */
  node: string;
  /** Initial state, normally `loading`. */
  state: ReportedState;
  /** Absolute path of this instance's log file, for `es logs`. */
  logFile?: string;
  /** Process id of the worker daemon (diagnostics). */
  pid?: number;
}

export interface RegisterResponse {
  /** `<jobId>.<restartCount>.<index>` */
  workerId: string;
  /** How often to heartbeat, in milliseconds. */
  heartbeatIntervalMs: number;
}

export interface HeartbeatRequest {
  state: ReportedState;
  load?: EngineLoad;
  /** Restart count of the sender, so a heartbeat from an old incarnation is fenced. */
  restartCount: number;
  /** Why the state is what it is (e.g. the engine's exit code when `failed`). */
  reason?: string;
}

export interface HeartbeatResponse {
  ok: true;
}

export interface DrainRequest {
  /** e.g. `SIGTERM`, `time-limit`, `admin`. */
  reason: string;
}

export interface DeregisterRequest {
  reason: string;
}

/** `<jobId>.<restartCount>.<index>` — the id of one engine instance incarnation. */
export function formatWorkerId(jobId: string, restartCount: number, index: number): string {
  return `${jobId}.${restartCount}.${index}`;
}

/** Keys derived from the shared secret file (same-user trust, like munge). */
export interface DerivedKeys {
  /** Bearer token workers present to the scheduler's worker routes. */
  workerToken: string;
  /** `--api-key` given to engines, so only the proxy can reach them. */
  engineApiKey: string;
  /** Bearer token for the admin API, when no explicit admin key is configured. */
  adminToken: string;
}

/**
 * Derive the worker token, the engine API key and the admin token from a secret.
 * @example
 * const { workerToken } = deriveKeys(readFileSync(secretFile, 'utf8'));
 */
export function deriveKeys(secret: string): DerivedKeys {
  const derive = (purpose: string) =>
    createHmac('sha256', secret.trim()).update(`elastic-serving:${purpose}`).digest('hex');
  return {
    workerToken: derive('worker'),
    engineApiKey: `es-engine-${derive('engine').slice(0, 40)}`,
    adminToken: derive('admin'),
  };
}

/** Environment variables the scheduler sets for a worker (batch script or local spawn). */
export const WORKER_ENV = {
  schedulerUrl: 'ES_SCHEDULER_URL',
  /** File whose first line is the scheduler's current URL (it writes `<log dir>/scheduler-url`). */
  schedulerUrlFile: 'ES_SCHEDULER_URL_FILE',
  secretFile: 'ES_SECRET_FILE',
  deployment: 'ES_DEPLOYMENT',
} as const;
