import type { PoolView } from '@es/pool';
import { BODY_MEMORY_FACTOR } from './body-budget.js';
import { parseCorsOrigin } from './cors.js';
import type { PlantedFaults, RoutingJournal } from './journal.js';

/** One finished proxied request, for metrics and logs. */
export interface ProxyRequestRecord {
  /** The `x-request-id` sent upstream and returned to the client. */
  requestId: string;
  /** Request path, e.g. `/v1/chat/completions`. */
  path: string;
  /** The `model` the client asked for, when it could be read. */
  model?: string;
  /** Deployment that served (or would have served) the request. */
  deployment?: string;
  /** Worker of the last upstream attempt. */
  workerId?: string;
  /** Whether the client asked for a stream. */
  stream: boolean;
  /**
   * Status the client saw: the upstream status once a byte was sent, the proxy's own error
   * status otherwise, 499 when the client went away first.
   */
  status: number;
  /** How the request ended. */
  outcome: RequestOutcome;
  /** Error code of the proxy's own error (see the README), when there was one. */
  errorCode?: string;
  /** Milliseconds from the request's arrival to the last byte sent. */
  latencyMs: number;
  /** Milliseconds from the request's arrival to the first response byte sent. */
  ttfbMs?: number;
  /** Milliseconds spent in the wait queue for capacity. */
  queuedMs: number;
  /** Upstream attempts beyond the first, continuations not included. */
  retries: number;
  /** Times the generation was continued on another worker after a cut (chat, completions). */
  continuations?: number;
  /** From the response's `usage`, when present. */
  promptTokens?: number;
  completionTokens?: number;
  totalTokens?: number;
}

/**
 * How a request ended: `ok` (upstream answered, any status passed through), `rejected`
 * (the proxy refused it: bad input, auth, unknown model, queue), `upstream-error` (no
 * worker could answer), `mid-stream-failure` (the worker failed after bytes were sent),
 * `client-abort` (the client disconnected first).
 */
export type RequestOutcome =
  'ok' | 'rejected' | 'upstream-error' | 'mid-stream-failure' | 'client-abort';

/**
 * One continuation decision: a generation cut after its first byte was continued on another
 * worker (`continued`; `inexact` when the request has parameters that cannot be carried
 * exactly across a splice), could not be (`failed`), or was not continuable at all
 * (`refused`: n > 1, structured output, ...).
 */
export interface ContinuationRecord {
  requestId: string;
  deployment: string;
  /** The worker whose generation was cut. */
  fromWorker: string;
  /** The worker that continued it (`continued`, `inexact`). */
  toWorker?: string;
  outcome: 'continued' | 'inexact' | 'refused' | 'failed';
  /**
   * `continued`: the cut (`connection`, `closed`, `stall`, `worker-lost`, `hand-over`);
   * `inexact`: what may differ (`penalties`, `seeded_sampling`, ...); `refused`: the
   * request's reason (`n`, `structured_output`, `echo`, `tools`, `parser`, `engine`, ...);
   * `failed`: `no-worker`, `max-continuations`, `retry-budget`.
   */
  reason: string;
  /** What cut the generation (as `reason` for `continued`). */
  cause: string;
  /** Milliseconds from the cut to the continuation's first event (the client's wait). */
  waitMs?: number;
  /** Tokens generated before the cut (0 when not known: refused requests). */
  generatedTokens: number;
}

/** Continuing a generation cut after its first byte on another worker. */
export interface ContinuationOptions {
  /** Continuations per request; 0 switches continuation off. Default 3. */
  maxContinuations?: number;
  /**
   * A generation that has started and sends nothing for this long is cut and continued
   * elsewhere (a stopped or wedged engine). 0 disables it. Default 30 000 ms.
   */
  stallTimeoutMs?: number;
  /** Longest wait for a worker to continue on, from the cut. Default 30 000 ms. */
  deadlineMs?: number;
}

/** Logger the proxy writes rare events to (pino-compatible). */
export interface ProxyLogger {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Options of {@link createProxyApp}. */
export interface ProxyAppOptions {
  /** Deployments, routable workers and outcome feedback (the registry of `@es/pool`). */
  pool: PoolView;
  /**
   * Client API keys. When non-empty, every `/v1/*` request needs
   * `Authorization: Bearer <one of them>`. Default: none (no client auth).
   */
  apiKeys?: readonly string[];
  /**
   * Client keys known by their hash only (`clientKeyHash` of `@es/protocol`: hex SHA-256), as
   * a data-plane process receives them from the scheduler; checked together with `apiKeys`.
   * Default: none.
   */
  clientKeyHashes?: readonly string[];
  /**
   * Origins whose web pages may call `/v1/*` from a browser (CORS), as browsers send them
   * (`https://notebook.example.org`, `http://localhost:8888`), or `*` for any origin.
   * Preflights are answered and responses (streams included) carry
   * `Access-Control-Allow-Origin` for these origins only. Default: none (no CORS headers:
   * browsers keep pages of other sites from reading any answer).
   */
  corsOrigins?: readonly string[];
  /**
   * Send the answering engine's address as `x-elastic-selected-endpoint` (the seed did
   * always). Default false: engine addresses are for operators (the admin API), and other
   * users of the cluster need not learn them; `x-elastic-selected-worker-id` is always sent.
   */
  exposeSelectedEndpoint?: boolean;
  /** Largest accepted request body, in bytes (at most `bodyBudgetBytes` / 4). Default 32 MiB. */
  maxBodyBytes?: number;
  /**
   * Memory for request bodies, all requests together; each body is charged 4 times its size
   * (its bytes, text, parsed fields and upstream copy). A body that does not fit waits (its socket is not read) up to `bodyBudgetWaitMs`, then gets 503
   * `body_budget_exhausted` with `Retry-After` (`queue.retryAfterSeconds`). Default 128 MiB.
   */
  bodyBudgetBytes?: number;
  /** Longest wait for room in the body budget; 0 answers 503 at once. Default 10 000 ms. */
  bodyBudgetWaitMs?: number;
  /**
   * A client that reads nothing of its response (writes back up, no `drain`) for this long
   * is disconnected and its upstream request aborted, so the engine frees the slot.
   * 0 = never. Default 60 000 ms.
   */
  clientIdleTimeoutMs?: number;
  /**
   * The whole request body must arrive within this many ms, else 408 `request_timeout` and
   * the connection is closed (slow-loris uploads). Default 30000; 0 = no limit.
   */
  requestBodyTimeoutMs?: number;
  retry?: RetryOptions;
  queue?: QueueOptions;
  upstream?: UpstreamOptions;
  affinity?: AffinityOptions;
  /** Called once per proxied `/v1/*` POST request when it has finished. */
  onRequestComplete?: (record: ProxyRequestRecord) => void;
  continuation?: ContinuationOptions;
  /** Called once per continuation decision (see {@link ContinuationRecord}). */
  onContinuation?: (record: ContinuationRecord) => void;
  logger?: ProxyLogger;
  /**
   * Receives every upstream attempt and every routing change (see `RoutingJournalEntry`),
   * synchronously and in order. For reliability runs; off by default.
   */
  journal?: RoutingJournal;
  /** Test-only faults planted on purpose (reliability runs prove their checks with them). */
  plantedFaults?: PlantedFaults;
}

/** Retries of attempts that failed before any byte reached the client. */
export interface RetryOptions {
  /** Attempts per request, the first included. Default 3. */
  maxAttempts?: number;
  /** Retries allowed per request over the last 10 s (on top of the floor). Default 0.2. */
  budgetRatio?: number;
  /** Retries per second always allowed, whatever the request rate. Default 5. */
  minRetriesPerSecond?: number;
}

/** The bounded wait for capacity when a deployment has no routable worker. */
export interface QueueOptions {
  /** Longest wait, in milliseconds; 0 answers 503 at once. Default 30 000. */
  timeoutMs?: number;
  /** Requests that may wait per deployment; more get 503 at once. Default 1 000. */
  maxLength?: number;
  /** `Retry-After` seconds sent with the 503. Default 5. */
  retryAfterSeconds?: number;
  /**
   * Longest wait, in milliseconds, of a request for a deployment that scales from zero
   * (`DeploymentView.scalesFromZero`) while it has no routable worker: long enough for a node
   * to be started and its model loaded. At the limit: 503 `no_capacity` with `Retry-After`
   * carrying the deployment's `expectedReadyAt` when known. Default 540 000 (9 min: under the openai client's 10 min timeout).
   */
  coldStartTimeoutMs?: number;
}

/** Connections to workers (one undici `Pool` with keep-alive per worker). */
export interface UpstreamOptions {
  /** TCP connect timeout. Default 5 000 ms. */
  connectTimeoutMs?: number;
  /**
   * Time to the response headers. Engines answer non-streaming requests only once the whole
   * generation is done, so this bounds the longest generation. 0 disables it. Default 900 000 ms
   * (15 min).
   */
  headersTimeoutMs?: number;
  /** Longest silence between two body chunks; 0 disables it. Default 300 000 ms. */
  bodyTimeoutMs?: number;
  /** Idle keep-alive connections are closed after this. Default 60 000 ms. */
  keepAliveTimeoutMs?: number;
}

/** Prefix-affinity routing (consistent hashing with bounded loads). */
export interface AffinityOptions {
  /**
   * A worker keeps its keys while its in-flight count stays under `loadFactor` times the
   * deployment's average (plus one). Default 1.25.
   */
  loadFactor?: number;
  /** Characters of the prompt that form the affinity key. Default 512. */
  prefixChars?: number;
  /** Request header carrying a session key (used before the prompt). Default `x-session-id`. */
  sessionHeader?: string;
}

/** The longest delay `setTimeout` honours (2^31 - 1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

/** Options with every default filled in. */
export interface ResolvedProxyOptions {
  apiKeys: readonly string[];
  clientKeyHashes: readonly string[];
  /** Parsed, deduplicated; empty: CORS off. */
  corsOrigins: readonly string[];
  exposeSelectedEndpoint: boolean;
  maxBodyBytes: number;
  bodyBudgetBytes: number;
  bodyBudgetWaitMs: number;
  clientIdleTimeoutMs: number;
  requestBodyTimeoutMs: number;
  retry: Required<RetryOptions>;
  queue: Required<QueueOptions>;
  upstream: Required<UpstreamOptions>;
  affinity: Required<AffinityOptions>;
  continuation: ResolvedContinuationOptions;
}

/** {@link ContinuationOptions} with defaults. */
export type ResolvedContinuationOptions = Required<ContinuationOptions>;

/** Fill in defaults; throws a `RangeError` on nonsensical values. */
export function resolveProxyOptions(options: Omit<ProxyAppOptions, 'pool'>): ResolvedProxyOptions {
  const resolved: ResolvedProxyOptions = {
    apiKeys: (options.apiKeys ?? []).filter((key) => key.length > 0),
    clientKeyHashes: (options.clientKeyHashes ?? []).filter((hash) => hash.length > 0),
    corsOrigins: [...new Set((options.corsOrigins ?? []).map(parseCorsOrigin))],
    exposeSelectedEndpoint: options.exposeSelectedEndpoint ?? false,
    maxBodyBytes: options.maxBodyBytes ?? 32 * 1024 * 1024,
    bodyBudgetBytes: options.bodyBudgetBytes ?? 128 * 1024 * 1024,
    bodyBudgetWaitMs: options.bodyBudgetWaitMs ?? 10_000,
    clientIdleTimeoutMs: options.clientIdleTimeoutMs ?? 60_000,
    requestBodyTimeoutMs: options.requestBodyTimeoutMs ?? 30_000,
    retry: {
      maxAttempts: options.retry?.maxAttempts ?? 3,
      budgetRatio: options.retry?.budgetRatio ?? 0.2,
      minRetriesPerSecond: options.retry?.minRetriesPerSecond ?? 5,
    },
    queue: {
      timeoutMs: options.queue?.timeoutMs ?? 30_000,
      maxLength: options.queue?.maxLength ?? 1_000,
      retryAfterSeconds: options.queue?.retryAfterSeconds ?? 5,
      coldStartTimeoutMs: options.queue?.coldStartTimeoutMs ?? 540_000,
    },
    upstream: {
      connectTimeoutMs: options.upstream?.connectTimeoutMs ?? 5_000,
      headersTimeoutMs: options.upstream?.headersTimeoutMs ?? 900_000,
      bodyTimeoutMs: options.upstream?.bodyTimeoutMs ?? 300_000,
      keepAliveTimeoutMs: options.upstream?.keepAliveTimeoutMs ?? 60_000,
    },
    continuation: {
      maxContinuations: options.continuation?.maxContinuations ?? 3,
      stallTimeoutMs: options.continuation?.stallTimeoutMs ?? 30_000,
      deadlineMs: options.continuation?.deadlineMs ?? 30_000,
    },
    affinity: {
      loadFactor: options.affinity?.loadFactor ?? 1.25,
      prefixChars: options.affinity?.prefixChars ?? 512,
      sessionHeader: (options.affinity?.sessionHeader ?? 'x-session-id').toLowerCase(),
    },
  };
  // '>0' for sizes and timeouts that cannot be zero, '>=0' where zero means "none".
  const rules: [string, number, '>0' | '>=0'][] = [
    ['maxBodyBytes', resolved.maxBodyBytes, '>0'],
    ['bodyBudgetBytes', resolved.bodyBudgetBytes, '>0'],
    ['bodyBudgetWaitMs', resolved.bodyBudgetWaitMs, '>=0'],
    ['clientIdleTimeoutMs', resolved.clientIdleTimeoutMs, '>=0'],
    ['requestBodyTimeoutMs', resolved.requestBodyTimeoutMs, '>=0'],
    ['retry.maxAttempts', resolved.retry.maxAttempts, '>0'],
    ['retry.budgetRatio', resolved.retry.budgetRatio, '>=0'],
    ['retry.minRetriesPerSecond', resolved.retry.minRetriesPerSecond, '>=0'],
    ['queue.timeoutMs', resolved.queue.timeoutMs, '>=0'],
    ['queue.maxLength', resolved.queue.maxLength, '>=0'],
    ['queue.retryAfterSeconds', resolved.queue.retryAfterSeconds, '>=0'],
    ['queue.coldStartTimeoutMs', resolved.queue.coldStartTimeoutMs, '>=0'],
    ['upstream.connectTimeoutMs', resolved.upstream.connectTimeoutMs, '>0'],
    ['upstream.headersTimeoutMs', resolved.upstream.headersTimeoutMs, '>=0'],
    ['upstream.bodyTimeoutMs', resolved.upstream.bodyTimeoutMs, '>=0'],
    ['upstream.keepAliveTimeoutMs', resolved.upstream.keepAliveTimeoutMs, '>0'],
    ['affinity.prefixChars', resolved.affinity.prefixChars, '>0'],
    ['continuation.maxContinuations', resolved.continuation.maxContinuations, '>=0'],
    ['continuation.stallTimeoutMs', resolved.continuation.stallTimeoutMs, '>=0'],
    ['continuation.deadlineMs', resolved.continuation.deadlineMs, '>0'],
  ];
  for (const [name, value, rule] of rules) {
    if (!(rule === '>0' ? value > 0 : value >= 0)) {
      throw new RangeError(`proxy option ${name} must be ${rule}, got ${value}`);
    }
  }
  if (resolved.maxBodyBytes * BODY_MEMORY_FACTOR > resolved.bodyBudgetBytes) {
    throw new RangeError(
      `proxy option bodyBudgetBytes (${resolved.bodyBudgetBytes}) must be at least ${BODY_MEMORY_FACTOR} × maxBodyBytes (${resolved.maxBodyBytes}): a body costs ${BODY_MEMORY_FACTOR} times its size in memory, and the largest must fit; raise bodyBudgetBytes or lower maxBodyBytes`,
    );
  }
  // A longer delay makes setTimeout fire at once: the wait would end before it began.
  for (const [name, value] of [
    ['queue.timeoutMs', resolved.queue.timeoutMs],
    ['queue.coldStartTimeoutMs', resolved.queue.coldStartTimeoutMs],
  ] as const) {
    if (value > MAX_TIMER_MS) {
      throw new RangeError(
        `proxy option ${name} must be at most ${MAX_TIMER_MS} ms (about 24 days), got ${value}`,
      );
    }
  }
  if (!(resolved.affinity.loadFactor >= 1)) {
    throw new RangeError(`proxy option affinity.loadFactor must be >= 1`);
  }
  return resolved;
}
