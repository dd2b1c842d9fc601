/**
 * What every upstream attempt shares, the byte pipe's (`pipe.ts`) and the continuation
 * relay's: counting it in flight on its worker (so the worker's loss aborts it), the headers
 * sent to the worker and passed on to the client, and how a failure is classified.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { AttemptOutcome, RoutableWorker } from '@es/pool';
import { WORKER_DRAINING } from '@es/protocol';
import type { OutgoingHeaders } from './client-sink.js';
import { ProxyError } from './errors.js';
import type { ForwardRequest, ForwardShared } from './forward.js';

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

/**
 * The worker's engine front refused the request because the worker drains (a 503 with
 * `x-es-draining: 1`, before any byte): nothing reached the engine, so it goes to another
 * worker whatever the retry budget says, and the worker leaves this process's routing.
 */
export function isDrainingRefusal(statusCode: number, headers: IncomingHttpHeaders): boolean {
  return statusCode === WORKER_DRAINING.status && headers[WORKER_DRAINING.header] === '1';
}

/** The error a draining refusal is retried with (seen only in logs). */
export function drainingError(worker: Pick<RoutableWorker, 'id'>): ProxyError {
  return new ProxyError('upstream_unavailable', `Worker ${worker.id} is draining.`, {
    status: 503,
  });
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
