/**
 * The worker protocol: JSON over HTTP between a worker (one per SLURM job) and the
 * scheduler. Every request is signed, and so is every answer, with the worker key derived
 * from the shared secret (see `deriveKeys` and `signWorkerRequest`); no secret is sent.
 * The schemas below are the contract: the scheduler validates request bodies with them,
 * the worker client validates answers with them, and every TypeScript type is inferred
 * from them.
 *
 * Routes (all POST, JSON bodies, mounted on the scheduler's HTTP server):
 * - `register`   RegisterRequest   → 200 RegisterResponse | 400 | 401 | 404 (unknown deployment) | 409 (fenced)
 * - `heartbeat`  HeartbeatRequest  → 200 OkResponse | 400 | 401 | 404 (unknown: register again) | 409 (fenced: exit)
 * - `drain`      DrainRequest      → 200 OkResponse | 400 | 401 | 404
 * - `deregister` DeregisterRequest → 200 OkResponse | 400 | 401 | 404
 * - `handover`   HandoverRequest   → 200 HandoverResponse | 400 | 401 | 404 (none of the ids known)
 *
 * Error bodies are {@link ErrorBody}: `{ "error": { "message", "type", "param", "code" } }`.
 */
import { isIPv4, isIPv6 } from 'node:net';
import * as v from 'valibot';
import { ENGINE_KINDS } from './engines.js';

const nonNegativeInt = v.pipe(v.number(), v.integer(), v.minValue(0));
const text = v.pipe(v.string(), v.minLength(1), v.maxLength(4096));

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 63 at most
// each, 253 in all (a trailing dot, the root, is allowed).
const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Whether `host` is a DNS host name (RFC 1123), an IPv4 literal or an IPv6 literal without
 * brackets or zone: what a worker may register as the address of its engines. Nothing else
 * (no user info, port, path, query, space) can end up in the URL the proxy builds from it.
 * @example
 * isRegistrableHost('gpu-12.cluster'); // true
 * isRegistrableHost('user@host'); // false
 */
export function isRegistrableHost(host: string): boolean {
  if (isIPv4(host)) return true;
  if (host.includes(':')) return isIPv6(host) && !host.includes('%');
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return name.length > 0 && name.length <= 253 && name.split('.').every((l) => HOST_LABEL.test(l));
}

/** A host a worker registers: see {@link isRegistrableHost}. */
export const HostSchema = v.pipe(
  v.string(),
  v.check(
    isRegistrableHost,
    'a host name (RFC 1123), an IPv4 or an IPv6 address, without user info, port, path or brackets',
  ),
);

/** States a worker reports about one engine instance. */
export const REPORTED_STATES = ['loading', 'ready', 'draining', 'failed'] as const;
export const ReportedStateSchema = v.picklist(REPORTED_STATES);
export type ReportedState = v.InferOutput<typeof ReportedStateSchema>;

export const EngineKindSchema = v.picklist(ENGINE_KINDS);

/** Engine load, read by the worker from the engine's `/metrics`. */
export const EngineLoadSchema = v.object({
  /** Requests being generated right now. */
  running: v.pipe(v.number(), v.minValue(0)),
  /** Requests queued inside the engine. */
  waiting: v.pipe(v.number(), v.minValue(0)),
  /** KV-cache usage in [0, 1], when the engine reports it. */
  kvCacheUsage: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1))),
});
export type EngineLoad = v.InferOutput<typeof EngineLoadSchema>;

export const RegisterRequestSchema = v.object({
  /** Name of the deployment this worker serves (the scheduler passes it in the job's env). */
  deployment: text,
  /** SLURM job id (or the local provider's job id). */
  jobId: text,
  /** `SLURM_RESTART_COUNT`, 0 when unset. (jobId, restartCount) is the incarnation. */
  restartCount: nonNegativeInt,
  /** Index of the engine instance on this node (0-based, DP rank on the node). */
  index: nonNegativeInt,
  /** Address of the instance: a host name (RFC 1123), an IPv4 or an IPv6 literal (no brackets). */
  host: HostSchema,
  port: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)),
  /** GPU ids of this instance's slice (as in CUDA_VISIBLE_DEVICES). */
  gpus: v.array(nonNegativeInt),
  engine: EngineKindSchema,
  /** Model path or hub id the engine serves. */
  model: text,
  /** Node name (SLURMD_NODENAME or hostname). */
  node: text,
  /** Initial state, normally `loading`. */
  state: ReportedStateSchema,
  /** Absolute path of this instance's log file, for `es logs`. */
  logFile: v.optional(v.string()),
  /** Process id of the worker daemon (diagnostics). */
  pid: v.optional(nonNegativeInt),
});
export type RegisterRequest = v.InferOutput<typeof RegisterRequestSchema>;

export const RegisterResponseSchema = v.object({
  /** `<jobId>.<restartCount>.<index>` (see `formatWorkerId`). */
  workerId: v.pipe(v.string(), v.minLength(1)),
  /** How often to heartbeat, in milliseconds. */
  heartbeatIntervalMs: v.pipe(v.number(), v.minValue(0)),
});
export type RegisterResponse = v.InferOutput<typeof RegisterResponseSchema>;

export const HeartbeatRequestSchema = v.object({
  state: ReportedStateSchema,
  load: v.optional(EngineLoadSchema),
  /** Restart count of the sender, so a heartbeat from an old incarnation is fenced. */
  restartCount: nonNegativeInt,
  /** Why the state is what it is (e.g. the engine's exit code when `failed`). */
  reason: v.optional(v.string()),
});
export type HeartbeatRequest = v.InferOutput<typeof HeartbeatRequestSchema>;

/** The answer of heartbeat, drain and deregister. */
export const OkResponseSchema = v.object({ ok: v.literal(true) });
export type OkResponse = v.InferOutput<typeof OkResponseSchema>;
export type HeartbeatResponse = OkResponse;

const ReasonSchema = v.object({
  /** e.g. `SIGTERM`, `time-limit`, `admin`. */
  reason: v.pipe(v.string(), v.maxLength(4096)),
});
export const DrainRequestSchema = ReasonSchema;
export type DrainRequest = v.InferOutput<typeof DrainRequestSchema>;
export const DeregisterRequestSchema = ReasonSchema;
export type DeregisterRequest = v.InferOutput<typeof DeregisterRequestSchema>;

/**
 * How a draining worker's engine front refuses a NEW inference request (`POST /v1/*`): status
 * 503 before any byte, an OpenAI-shaped body with this `code`, and `header: '1'`. Data-plane
 * processes retry it on another worker and take the worker out of their own routing at once,
 * so a drain takes effect in every one of them even while the scheduler is unreachable.
 */
export const WORKER_DRAINING = {
  status: 503,
  code: 'worker_draining',
  header: 'x-es-draining',
} as const;

/**
 * A draining worker whose engines are still busy a margin before its drain grace ends: the
 * generations still running on `workerIds` must be continued elsewhere now, because those
 * engines get SIGTERM in `stopInMs`. One message for all the instances of the worker.
 */
export const HandoverRequestSchema = v.object({
  /** The worker ids (`<job>.<restart>.<index>`) whose generations are handed over. */
  workerIds: v.pipe(
    v.array(v.pipe(v.string(), v.minLength(1), v.maxLength(256))),
    v.minLength(1),
    v.maxLength(1024),
  ),
  /** Why the worker is stopping (its drain reason: `SIGTERM`, ...). */
  reason: v.pipe(v.string(), v.maxLength(4096)),
  /** Milliseconds until the engines get SIGTERM (what is left of the hand-over margin). */
  stopInMs: v.pipe(v.number(), v.minValue(0)),
});
export type HandoverRequest = v.InferOutput<typeof HandoverRequestSchema>;

/** The answer of handover: the ids the scheduler announced (the others it did not know). */
export const HandoverResponseSchema = v.object({
  ok: v.literal(true),
  handedOver: v.array(v.string()),
});
export type HandoverResponse = v.InferOutput<typeof HandoverResponseSchema>;

/** The OpenAI-shaped error body of every non-2xx answer. */
export const ErrorBodySchema = v.object({
  error: v.object({
    message: v.string(),
    type: v.string(),
    param: v.optional(v.nullable(v.string())),
    /** `unauthorized`, `invalid_request`, `unknown_deployment`, `unknown_worker`, `fenced`... */
    code: v.optional(v.nullable(v.string())),
  }),
});
export type ErrorBody = v.InferOutput<typeof ErrorBodySchema>;

/** Base path of the worker protocol on the scheduler. */
export const WORKER_API_PREFIX = '/api/v1/workers';

/**
 * Every route of the worker protocol: its path pattern (Hono syntax; the server mounts
 * exactly this), and the schemas of its request and of its 200 answer. The client fills
 * the pattern with {@link workerRoutePath}.
 */
export const WORKER_ROUTES = {
  register: {
    method: 'POST',
    path: `${WORKER_API_PREFIX}/register`,
    request: RegisterRequestSchema,
    response: RegisterResponseSchema,
  },
  heartbeat: {
    method: 'POST',
    path: `${WORKER_API_PREFIX}/:workerId/heartbeat`,
    request: HeartbeatRequestSchema,
    response: OkResponseSchema,
  },
  drain: {
    method: 'POST',
    path: `${WORKER_API_PREFIX}/:workerId/drain`,
    request: DrainRequestSchema,
    response: OkResponseSchema,
  },
  deregister: {
    method: 'POST',
    path: `${WORKER_API_PREFIX}/:workerId/deregister`,
    request: DeregisterRequestSchema,
    response: OkResponseSchema,
  },
  handover: {
    method: 'POST',
    path: `${WORKER_API_PREFIX}/handover`,
    request: HandoverRequestSchema,
    response: HandoverResponseSchema,
  },
} as const;

export type WorkerRouteName = keyof typeof WORKER_ROUTES;

/**
 * The concrete path of a route, `:workerId` filled (URI-encoded).
 * @example
 * workerRoutePath('heartbeat', '42.0.1'); // '/api/v1/workers/42.0.1/heartbeat'
 */
export function workerRoutePath(route: WorkerRouteName, workerId = ''): string {
  return WORKER_ROUTES[route].path.replace(':workerId', encodeURIComponent(workerId));
}
