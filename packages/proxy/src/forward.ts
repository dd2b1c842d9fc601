import type { IncomingHttpHeaders } from 'node:http';
import type { AttemptOutcome, DeploymentView, PoolView, RoutableWorker } from '@es/pool';
import type { Dispatcher } from 'undici';
import type { ClientSink, OutgoingHeaders } from './client-sink.js';
import { ProxyError } from './errors.js';
import type {
  ProxyLogger,
  ProxyRequestRecord,
  RequestOutcome,
  ResolvedProxyOptions,
} from './options.js';
import type { RoutingJournal } from './journal.js';
import type { DeploymentRouter } from './routing.js';
import type { RetryBudget } from './retry-budget.js';
import type { UpstreamPools } from './upstream-pools.js';
import { UsageTail } from './usage.js';
import type { GenerationPlan } from './continuation/plan.js';
import { forwardGeneration } from './continuation/relay.js';
import type { ContinuationRecord, ResolvedContinuationOptions } from './options.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's business, not the client's. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/** State shared by every request of one proxy app. */
export interface ForwardShared {
  pool: PoolView;
  options: ResolvedProxyOptions;
  pools: UpstreamPools;
  budget: RetryBudget;
  router(deployment: string): DeploymentRouter;
  queue: WaitQueue;
  onRequestComplete: ((record: ProxyRequestRecord) => void) | undefined;
  logger: ProxyLogger | undefined;
  journal: RoutingJournal | undefined;
  /** A planted fault (tests only): cut streams end without their error event. */
  silentStreamCut: boolean;
  /** A planted fault (tests only): continuations start from the prompt alone. */
  continueFromScratch: boolean;
  /** Attempts in flight per worker id: told when their worker is lost (see `PoolView.onWorkerLost`). */
  attemptsByWorker: Map<string, Set<(reason: string) => void>>;
  /** Limits of continuing a cut generation on another worker. */
  continuation: ResolvedContinuationOptions;
  onContinuation: ((record: ContinuationRecord) => void) | undefined;
}

/** Abort every attempt in flight on a worker the pool lost. */
export function abortAttemptsOn(shared: ForwardShared, workerId: string, reason: string): void {
  const attempts = shared.attemptsByWorker.get(workerId);
  if (attempts === undefined) return;
  for (const abort of [...attempts]) abort(reason);
}

/**
 * Count an attempt in flight on `worker` (its `inFlight`) and let the loss of the worker
 * abort it (see {@link abortAttemptsOn}); returns the function that undoes both, once.
 */
export function trackAttempt(
  shared: ForwardShared,
  worker: RoutableWorker,
  abort: (error: Error) => void,
): () => void {
  worker.inFlight++;
  const lost = (reason: string) => {
    abort(new WorkerLostError(`worker ${worker.id} stopped serving: ${reason}`));
  };
  let attempts = shared.attemptsByWorker.get(worker.id);
  if (attempts === undefined) shared.attemptsByWorker.set(worker.id, (attempts = new Set()));
  attempts.add(lost);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    worker.inFlight--;
    attempts.delete(lost);
    if (attempts.size === 0) shared.attemptsByWorker.delete(worker.id);
  };
}

/** The worker stopped serving while an attempt was in flight on it. */
export class WorkerLostError extends Error {
  readonly code = 'ES_WORKER_LOST';
}

/** Knows when the client goes away, and tells whoever currently cares. */
export class ClientState {
  gone = false;
  private listener: (() => void) | undefined;

  /** The client disconnected. */
  markGone(): void {
    if (this.gone) return;
    this.gone = true;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  /** Replace the listener; it runs at once if the client is already gone. */
  onGone(listener: (() => void) | undefined): void {
    this.listener = listener;
    if (this.gone && listener !== undefined) {
      this.listener = undefined;
      listener();
    }
  }
}

/** One request on its way to a worker. */
export interface ForwardRequest {
  requestId: string;
  /** Path and query sent upstream. */
  path: string;
  body: Buffer;
  model: string;
  stream: boolean;
  deployment: DeploymentView;
  affinityKey: string | undefined;
  client: ClientState;
  sink: ClientSink;
  /** `performance.now()` at arrival. */
  startedAt: number;
  /** For chat and completions: how the generation is relayed (continued if cut, or not). */
  plan?: GenerationPlan;
}

type AttemptResult =
  | { kind: 'committed' }
  | { kind: 'retry'; error: ProxyError }
  | { kind: 'failed'; error: ProxyError };

/**
 * Send `request` to a worker, retrying on another one while nothing has reached the client.
 * Resolves once the response is committed to the sink (the rest streams on its own and is
 * recorded when it ends); rejects with a `ProxyError` otherwise (`client_closed_request`
 * when the client left first).
 */
export async function forward(shared: ForwardShared, request: ForwardRequest): Promise<void> {
  if (request.plan?.continuable === true) return forwardGeneration(shared, request, request.plan);
  const router = shared.router(request.deployment.name);
  const progress: Progress = { attempts: 0, queuedMs: 0, workerId: undefined };
  shared.budget.recordRequest();
  try {
    await forwardLoop(shared, request, router, progress);
  } catch (error) {
    if (error instanceof ProxyError) withProgress(error, progress);
    throw error;
  }
}

async function forwardLoop(
  shared: ForwardShared,
  request: ForwardRequest,
  router: DeploymentRouter,
  progress: Progress,
): Promise<void> {
  const { pool, options } = shared;
  const deployment = request.deployment;
  let tried: Set<string> | undefined;
  let queueDeadline: number | undefined;
  for (;;) {
    if (request.client.gone) throw clientGone();
    const workers = pool.routable(deployment.name);
    const worker = router.pick(deployment.routing, workers, request.affinityKey, tried);
    if (worker === undefined) {
      if (progress.attempts > 0) {
        throw new ProxyError('upstream_unavailable', 'No other worker could take the request.', {
          status: 502,
        });
      }
      const waitStart = performance.now();
      queueDeadline ??= waitStart + options.queue.timeoutMs;
      try {
        await shared.queue.wait(deployment.name, request.client, queueDeadline);
      } finally {
        progress.queuedMs += performance.now() - waitStart;
      }
      continue;
    }
    progress.attempts++;
    progress.workerId = worker.id;
    shared.journal?.({
      type: 'attempt',
      time: Date.now(),
      requestId: request.requestId,
      deployment: deployment.name,
      workerId: worker.id,
      attempt: progress.attempts,
    });
    const canRetry = (): boolean => {
      if (progress.attempts >= options.retry.maxAttempts || request.client.gone) return false;
      const others = pool
        .routable(deployment.name)
        .some((w) => w.id !== worker.id && (tried === undefined || !tried.has(w.id)));
      return others && shared.budget.tryRetry();
    };
    const result = await attempt(shared, request, worker, progress, canRetry);
    if (result.kind === 'committed') return;
    if (result.kind === 'failed') throw result.error;
    shared.logger?.warn(
      { requestId: request.requestId, workerId: worker.id, code: result.error.code },
      `retrying on another worker: ${result.error.message}`,
    );
    (tried ??= new Set()).add(worker.id);
  }
}

/** What a request's attempts have done so far (for its record). */
export interface Progress {
  attempts: number;
  queuedMs: number;
  workerId: string | undefined;
}

const progressKey = Symbol('progress');

/** Attach `progress` to an error thrown out of `forward`, for the request record. */
export function withProgress(error: ProxyError, progress: Progress): ProxyError {
  (error as ProxyError & { [progressKey]?: Progress })[progressKey] = progress;
  return error;
}

/** Attempts and queue time of a failed `forward`, for the request record. */
export function progressOf(error: unknown): Progress | undefined {
  return (error as { [progressKey]?: Progress } | null)?.[progressKey];
}

/** How an upstream error is reported to the pool, and the client's error for it. */
export function classify(
  error: Error & { code?: string },
  worker: Pick<RoutableWorker, 'id'>,
): {
  outcome: AttemptOutcome;
  proxyError: ProxyError;
} {
  const code = error.code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return {
      outcome: 'timeout',
      proxyError: new ProxyError('upstream_timeout', `Worker ${worker.id} timed out (${code}).`, {
        status: 504,
        cause: error,
      }),
    };
  }
  return {
    outcome: 'connect-error',
    proxyError: new ProxyError(
      'upstream_unavailable',
      // The worker's id, never its address (clients need not learn engine addresses).
      `Worker ${worker.id} could not be reached${code === '' ? '' : ` (${code})`}.`,
      { status: 502, cause: error },
    ),
  };
}

/**
 * The upstream response headers as the client receives them; the engine's address only
 * when `exposeEndpoint` (the proxy's `exposeSelectedEndpoint`).
 */
export function clientHeaders(
  upstream: IncomingHttpHeaders,
  requestId: string,
  sse: boolean,
  worker: RoutableWorker,
  exposeEndpoint: boolean,
): OutgoingHeaders {
  const headers: OutgoingHeaders = {};
  for (const name in upstream) {
    const value = upstream[name];
    // CORS is the proxy's decision (corsOrigins), never an engine's.
    if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('access-control-')) continue;
    headers[name] = value;
  }
  headers['x-request-id'] = requestId;
  // The seed's names: which engine instance answered (debugging, and request histories).
  headers['x-elastic-selected-worker-id'] = worker.id;
  if (exposeEndpoint) headers['x-elastic-selected-endpoint'] = worker.baseUrl;
  if (sse) {
    headers['cache-control'] = 'no-cache';
    // nginx and friends must not buffer tokens.
    headers['x-accel-buffering'] = 'no';
  }
  return headers;
}

function attempt(
  shared: ForwardShared,
  request: ForwardRequest,
  worker: RoutableWorker,
  progress: Progress,
  canRetry: () => boolean,
): Promise<AttemptResult> {
  return new Promise((settle) => {
    const { pool } = shared;
    const sink = request.sink;
    let phase: 'waiting' | 'headers' | 'committed' | 'done' = 'waiting';
    let controller: Dispatcher.DispatchController | undefined;
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let sse = false;
    let ttfbMs: number | undefined;
    const tail = new UsageTail();
    let released = false;

    const untrack = trackAttempt(shared, worker, (error) => controller?.abort(error));
    const release = () => {
      if (released) return;
      released = true;
      untrack();
      request.client.onGone(undefined);
    };

    const finish = (outcome: RequestOutcome, clientStatus: number, errorCode?: string) => {
      phase = 'done';
      release();
      const onComplete = shared.onRequestComplete;
      if (onComplete === undefined) return;
      const record: ProxyRequestRecord = {
        requestId: request.requestId,
        path: request.path,
        model: request.model,
        deployment: request.deployment.name,
        workerId: worker.id,
        stream: request.stream,
        status: clientStatus,
        outcome,
        latencyMs: performance.now() - request.startedAt,
        queuedMs: progress.queuedMs,
        retries: progress.attempts - 1,
      };
      if (ttfbMs !== undefined) record.ttfbMs = ttfbMs;
      if (errorCode !== undefined) record.errorCode = errorCode;
      const usage = tail.read();
      if (usage !== undefined) Object.assign(record, usage);
      onComplete(record);
    };

    const commit = () => {
      phase = 'committed';
      ttfbMs = performance.now() - request.startedAt;
      sse = String(headers['content-type'] ?? '').startsWith('text/event-stream');
      sink.start(
        status,
        clientHeaders(
          headers,
          request.requestId,
          sse,
          worker,
          shared.options.exposeSelectedEndpoint,
        ),
      );
      settle({ kind: 'committed' });
    };

    const preCommitFailure = (error: ProxyError, outcome: AttemptOutcome) => {
      pool.reportOutcome(worker.id, outcome);
      const retry = canRetry();
      phase = 'done';
      release();
      settle(retry ? { kind: 'retry', error } : { kind: 'failed', error });
    };

    const midStreamFailure = (error: Error & { code?: string }) => {
      const timeout = error.code === 'UND_ERR_BODY_TIMEOUT';
      const plan = request.plan;
      if (plan !== undefined && !plan.continuable) {
        shared.onContinuation?.({
          requestId: request.requestId,
          deployment: request.deployment.name,
          fromWorker: worker.id,
          outcome: 'refused',
          reason: plan.reason,
          cause: timeout ? 'stall' : 'connection',
          generatedTokens: 0,
        });
      }
      pool.reportOutcome(worker.id, timeout ? 'timeout' : 'mid-stream-failure');
      shared.logger?.warn(
        { requestId: request.requestId, workerId: worker.id, code: error.code },
        `worker failed mid-stream: ${error.message}`,
      );
      const proxyError = new ProxyError(
        'upstream_stream_interrupted',
        `The worker serving this request failed mid-response: ${error.message}`,
        { status: 502 },
      );
      try {
        if (sse && shared.silentStreamCut) {
          sink.end();
        } else if (sse) {
          // Start on an event boundary so the error cannot merge into a half-sent event.
          const lastChunk = tail.last();
          const boundary =
            lastChunk !== undefined &&
            lastChunk.length >= 2 &&
            lastChunk[lastChunk.length - 1] === 0x0a &&
            lastChunk[lastChunk.length - 2] === 0x0a;
          sink.write(
            Buffer.from(`${boundary ? '' : '\n\n'}data: ${JSON.stringify(proxyError)}\n\n`),
          );
          sink.end();
        } else {
          sink.destroy(proxyError);
        }
      } finally {
        finish('mid-stream-failure', status, proxyError.code);
      }
    };

    const abortFromClient = () => {
      controller?.abort(clientGone());
    };

    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (request.client.gone) c.abort(clientGone());
      },
      onResponseStart(c, statusCode, responseHeaders) {
        if (phase !== 'waiting') return;
        if ((statusCode >= 500 || statusCode === 429) && canRetry()) {
          pool.reportOutcome(worker.id, statusCode === 429 ? 'success' : 'upstream-5xx');
          phase = 'done';
          release();
          settle({
            kind: 'retry',
            error: new ProxyError('upstream_unavailable', `The worker answered ${statusCode}.`, {
              status: 502,
            }),
          });
          c.abort(new Error('discarding a retried response'));
          return;
        }
        status = statusCode;
        headers = responseHeaders;
        phase = 'headers';
      },
      onResponseData(c, chunk) {
        if (phase === 'done') return;
        if (phase === 'headers') commit();
        tail.push(chunk);
        if (!sink.write(chunk)) {
          c.pause();
          sink.onDrain(() => c.resume());
        }
      },
      onResponseEnd() {
        if (phase === 'done') return;
        if (phase === 'headers') commit();
        sink.end();
        pool.reportOutcome(worker.id, status >= 500 ? 'upstream-5xx' : 'success');
        finish('ok', status);
      },
      onResponseError(_c, error: Error & { code?: string }) {
        if (phase === 'done') return;
        if (request.client.gone) {
          if (phase === 'committed') {
            sink.destroy(error);
            finish('client-abort', 499, 'client_closed_request');
          } else {
            // Not committed: the caller records the request.
            phase = 'done';
            release();
            settle({ kind: 'failed', error: clientGone() });
          }
          return;
        }
        if (phase === 'committed') {
          midStreamFailure(error);
          return;
        }
        const { outcome, proxyError } = classify(error, worker);
        preCommitFailure(proxyError, outcome);
      },
    };

    request.client.onGone(abortFromClient);
    try {
      shared.pools.get(worker.baseUrl).dispatch(
        {
          path: request.path,
          method: 'POST',
          body: request.body,
          headers: upstreamHeaders(request, worker),
        },
        handler,
      );
    } catch (error) {
      preCommitFailure(classify(error as Error, worker).proxyError, 'connect-error');
    }
  });
}

/** The client left before anything was committed (recorded as 499, never sent). */
export function clientGone(): ProxyError {
  return new ProxyError('client_closed_request', 'The client closed the request.', {
    status: 499,
  });
}

/**
 * Headers of an upstream request to `worker` (`sse`: a streamed answer is expected); the key
 * is the worker's own (its job's engine key), else the deployment's.
 */
export function upstreamHeaders(
  request: ForwardRequest,
  worker: RoutableWorker,
  sse = request.stream,
): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-request-id': request.requestId,
    accept: sse ? 'text/event-stream' : 'application/json',
  };
  const key = worker.upstreamKey ?? request.deployment.upstreamApiKey;
  if (key !== undefined && key !== '') headers.authorization = `Bearer ${key}`;
  return headers;
}

/** The bounded per-deployment wait for a routable worker. */
export interface WaitQueue {
  /**
   * Resolves when `deployment` has a routable worker; throws a 503 `ProxyError` when
   * `deadline` (a `performance.now()` time) passes or the queue is full.
   */
  wait(deployment: string, client: ClientState, deadline: number): Promise<void>;
  /** Requests waiting, per deployment. */
  depth(): Record<string, number>;
}

export function createWaitQueue(pool: PoolView, options: ResolvedProxyOptions['queue']): WaitQueue {
  const waiting = new Map<string, number>();
  const unavailable = (code: 'queue_full' | 'no_capacity', message: string) =>
    new ProxyError(code, message, {
      status: 503,
      headers: { 'retry-after': String(options.retryAfterSeconds) },
    });

  return {
    async wait(deployment, client, deadline) {
      const count = waiting.get(deployment) ?? 0;
      const noCapacity = () =>
        unavailable(
          'no_capacity',
          `No worker of ${deployment} became ready within ${options.timeoutMs} ms; try again later.`,
        );
      if (deadline <= performance.now()) throw noCapacity();
      if (count >= options.maxLength) {
        throw unavailable(
          'queue_full',
          `${count} requests are already waiting for ${deployment}; try again later.`,
        );
      }
      waiting.set(deployment, count + 1);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), deadline - performance.now());
      client.onGone(() => controller.abort());
      try {
        for (;;) {
          const ready = await pool.waitForRoutable(deployment, controller.signal);
          if (client.gone) throw clientGone();
          if (!ready || controller.signal.aborted) throw noCapacity();
          if (pool.routable(deployment).length > 0) return;
          // Ready was announced but the worker is gone again: do not spin on it.
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } finally {
        clearTimeout(timer);
        client.onGone(undefined);
        const left = (waiting.get(deployment) ?? 1) - 1;
        if (left === 0) waiting.delete(deployment);
        else waiting.set(deployment, left);
      }
    },
    depth() {
      return Object.fromEntries(waiting);
    },
  };
}
