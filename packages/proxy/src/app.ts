import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PoolView } from '@es/pool';
import { createBearerCheck } from '@es/protocol';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { createBodyBudget } from './body-budget.js';
import type { BodyBudget } from './body-budget.js';
import { createNodeSink, createWebSink } from './client-sink.js';
import { corsMiddleware } from './cors.js';
import type { ClientSink } from './client-sink.js';
import { ProxyError } from './errors.js';
import { forward } from './forward.js';
import type { ForwardShared } from './forward.js';
import { withStaleRouting } from './journal.js';
import { resolveProxyOptions } from './options.js';
import type { ProxyAppOptions, ProxyRequestRecord } from './options.js';
import type { BodyLease } from './request-body.js';
import {
  isJsonContentType,
  parseRequest,
  promptPrefix,
  readNodeBody,
  readWebBody,
  withMembers,
} from './request-body.js';
import { ClientState, clientGone, progressOf } from './request-state.js';
import { createRetryBudget } from './retry-budget.js';
import { createDeploymentRouter } from './routing.js';
import type { DeploymentRouter } from './routing.js';
import { createUpstreamPools } from './upstream-pools.js';
import { abortAttemptsOn } from './upstream.js';
import { createWaitQueue } from './wait-queue.js';
import { generationKind, planGeneration } from './continuation/plan.js';
import type { GenerationPlan } from './continuation/plan.js';

/** Hono environment of the proxy app; the bindings are set by `@hono/node-server`. */
export interface ProxyEnv {
  Bindings: { incoming?: IncomingMessage; outgoing?: ServerResponse };
  Variables: { requestId: string };
}

/** The Hono app returned by {@link createProxyApp}, plus its lifecycle. */
export type ProxyApp = Hono<ProxyEnv> & {
  /** Close the upstream connection pools (call after the HTTP server has closed). */
  close(): Promise<void>;
  /** Requests waiting for capacity, per deployment. */
  queueDepth(): Record<string, number>;
};

const STARTED = Date.now();

/**
 * Build the OpenAI-compatible router: `POST /v1/chat/completions`, `/v1/completions`,
 * `/v1/embeddings` and any other `POST /v1/*` are routed by `model` to a worker of the
 * matching deployment; `GET /v1/models` is answered from the pool.
 *
 * Served by `@hono/node-server`, upstream bytes are written straight to Node's response
 * (no web-stream conversion on the hot path); through `app.request()` the same logic feeds a
 * web `Response`.
 * @example
 * const app = createProxyApp({ pool: registry, apiKeys: ['sk-local'] });
 * const server = await startProxyServer({ fetch: app.fetch, port: 8780 });
 */
export function createProxyApp(options: ProxyAppOptions): ProxyApp {
  const resolved = resolveProxyOptions(options);
  const staleMs = options.plantedFaults?.staleRoutingMs ?? 0;
  const pool = staleMs > 0 ? withStaleRouting(options.pool, staleMs) : options.pool;
  const journal = options.journal;
  const pools = createUpstreamPools(resolved.upstream);
  const routers = new Map<string, DeploymentRouter>();
  const shared: ForwardShared = {
    pool,
    options: resolved,
    pools,
    budget: createRetryBudget(resolved.retry.budgetRatio, resolved.retry.minRetriesPerSecond),
    router(deployment) {
      let router = routers.get(deployment);
      if (router === undefined) {
        router = createDeploymentRouter(resolved.affinity.loadFactor);
        routers.set(deployment, router);
      }
      return router;
    },
    queue: createWaitQueue(pool, resolved.queue),
    onRequestComplete: guard(options.onRequestComplete, options.logger),
    continuation: resolved.continuation,
    onContinuation: guard(options.onContinuation, options.logger),
    attemptsByWorker: new Map(),
    logger: options.logger,
    journal,
    silentStreamCut: options.plantedFaults?.silentStreamCut === true,
    continueFromScratch: options.plantedFaults?.continueFromScratch === true,
  };
  // A worker that stops serving (hung engine, failed, gone) takes its in-flight attempts
  // with it at once: retried elsewhere, or an error event for a stream already started.
  const unsubscribeLost = pool.onWorkerLost?.((workerId, reason) =>
    abortAttemptsOn(shared, workerId, reason),
  );
  const unsubscribeRouting =
    journal === undefined
      ? undefined
      : options.pool.onRoutingChange?.((change) =>
          journal({ type: 'route', time: Date.now(), ...change }),
        );
  // The table as it stands when the app is made (a data-plane process makes it after its
  // first snapshot): the journal's reader judges each attempt against what was routable.
  if (journal !== undefined) {
    const time = Date.now();
    for (const d of pool.deployments()) {
      for (const w of pool.routable(d.name)) {
        journal({
          type: 'route',
          time,
          deployment: d.name,
          workerId: w.id,
          routable: true,
          reason: 'routable when the proxy started',
        });
      }
    }
  }
  const checkKey =
    resolved.apiKeys.length + resolved.clientKeyHashes.length > 0
      ? createBearerCheck(resolved.apiKeys, resolved.clientKeyHashes)
      : undefined;

  const app = new Hono<ProxyEnv>();

  // Before the key check: a browser's preflight carries no key.
  if (resolved.corsOrigins.length > 0) {
    app.use('/v1/*', corsMiddleware(resolved.corsOrigins, header));
  }
  app.use('/v1/*', async (c, next) => {
    const given = header(c, 'x-request-id');
    // A client's id is kept when it is sane; it ends up in logs and upstream headers.
    const requestId =
      given !== undefined && given.length > 0 && given.length <= 200 ? given : randomUUID();
    c.set('requestId', requestId);
    if (checkKey !== undefined && !checkKey(header(c, 'authorization'))) {
      throw new ProxyError(
        'invalid_api_key',
        header(c, 'authorization') === undefined
          ? "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
          : 'Incorrect API key provided.',
        { status: 401 },
      );
    }
    await next();
  });

  app.get('/v1/models', (c) =>
    c.json(modelList(pool), 200, { 'x-request-id': c.get('requestId') }),
  );
  app.get('/v1/models/:model{.+}', (c) => {
    const name = c.req.param('model');
    const entry = modelList(pool).data.find((m) => m.id === name || m.aliases.includes(name));
    if (entry === undefined) throw modelNotFound(pool, name);
    return c.json(entry, 200, { 'x-request-id': c.get('requestId') });
  });

  const bodyBudget = createBodyBudget(
    resolved.bodyBudgetBytes,
    resolved.bodyBudgetWaitMs,
    resolved.queue.retryAfterSeconds,
  );
  app.post('/v1/*', (c) => proxyRequest(c, shared, bodyBudget));

  // A route rather than notFound(): a parent app that mounts this one keeps its own notFound.
  app.all('/v1/*', (c) => {
    throw new ProxyError('unknown_url', `Unknown request URL: ${c.req.method} ${c.req.path}.`, {
      status: 404,
    });
  });

  app.onError((error, c) => {
    const proxyError =
      error instanceof ProxyError
        ? error
        : new ProxyError('internal_error', 'The proxy failed to handle the request.', {
            status: 500,
            cause: error,
          });
    if (!(error instanceof ProxyError)) {
      options.logger?.warn({ err: error }, 'proxy internal error');
    }
    const requestId = c.get('requestId');
    return c.json(proxyError.toJSON(), proxyError.status as ContentfulStatusCode, {
      ...proxyError.headers,
      ...(requestId === undefined ? {} : { 'x-request-id': requestId }),
    });
  });

  return Object.assign(app, {
    close: () => {
      unsubscribeLost?.();
      unsubscribeRouting?.();
      return pools.close();
    },
    queueDepth: () => shared.queue.depth(),
  });
}

/** A throwing observer must not break the request it observes. */
function guard<R>(
  observer: ((record: R) => void) | undefined,
  logger: ProxyAppOptions['logger'],
): ((record: R) => void) | undefined {
  if (observer === undefined) return undefined;
  return (record) => {
    try {
      observer(record);
    } catch (error) {
      logger?.warn({ err: error }, 'a request observer threw');
    }
  };
}

/** A request header, read from Node's parsed headers when available (cheaper). */
function header(c: Context<ProxyEnv>, name: string): string | undefined {
  const incoming = c.env?.incoming;
  if (incoming !== undefined) {
    const value = incoming.headers[name];
    return Array.isArray(value) ? value[0] : value;
  }
  return c.req.header(name);
}

function modelNotFound(pool: PoolView, model: string): ProxyError {
  const served = pool.deployments().flatMap((d) => d.modelNames);
  return new ProxyError(
    'model_not_found',
    `The model '${model}' does not exist. Served models: ${served.join(', ') || '(none)'}.`,
    { status: 404, param: 'model' },
  );
}

function modelList(pool: PoolView) {
  return {
    object: 'list' as const,
    data: pool.deployments().map((deployment) => {
      const workers = pool.routable(deployment.name);
      let inFlight = 0;
      for (const worker of workers) inFlight += worker.inFlight;
      return {
        id: deployment.modelNames[0] ?? deployment.name,
        object: 'model' as const,
        created: Math.floor(STARTED / 1000),
        owned_by: 'elastic-serving',
        root: deployment.model,
        parent: null,
        aliases: deployment.modelNames.slice(1),
        deployment: deployment.name,
        engine: deployment.engine,
        routing: deployment.routing,
        ready_workers: workers.length,
        in_flight: inFlight,
      };
    }),
  };
}

async function proxyRequest(
  c: Context<ProxyEnv>,
  shared: ForwardShared,
  bodyBudget: BodyBudget,
): Promise<Response> {
  const { maxBodyBytes, requestBodyTimeoutMs, clientIdleTimeoutMs, affinity } = shared.options;
  const startedAt = performance.now();
  const requestId = c.get('requestId');
  const incoming = c.env?.incoming;
  const outgoing = c.env?.outgoing;
  const node = incoming !== undefined && outgoing !== undefined;
  const path = node ? (incoming.url ?? c.req.path) : pathAndQuery(c.req.url);
  const base: Pick<ProxyRequestRecord, 'requestId' | 'path' | 'stream'> & {
    model?: string;
    deployment?: string;
  } = { requestId, path, stream: false };
  const client = new ClientState();
  // The body's bytes stay taken until the request is done with it (retries resend it).
  const lease: BodyLease = { budget: bodyBudget, bytes: 0 };

  try {
    if (!isJsonContentType(header(c, 'content-type'))) {
      throw new ProxyError(
        'unsupported_media_type',
        `Content-Type must be application/json, got '${header(c, 'content-type') ?? '(none)'}'.`,
        { status: 415 },
      );
    }
    let body = node
      ? await readNodeBody(incoming, maxBodyBytes, requestBodyTimeoutMs, undefined, lease)
      : await readWebBody(c.req.raw, maxBodyBytes, lease);
    const parsed = parseRequest(body);
    base.model = parsed.model;
    base.stream = parsed.stream;
    const deployment = shared.pool.resolveModel(parsed.model);
    if (deployment === undefined) throw modelNotFound(shared.pool, parsed.model);
    base.deployment = deployment.name;
    const servedName = deployment.modelNames[0];
    let fields = parsed.body;
    if (servedName !== undefined && parsed.model !== servedName) {
      // Engines started with --served-model-name (vLLM, SGLang) reject any other name, the
      // model path included: an alias costs one copy of the bytes, the served name none.
      fields = { ...parsed.body, model: servedName };
      body = withMembers(body, parsed.body, { model: servedName });
    }
    const kind = generationKind(path);
    const plan: GenerationPlan | undefined =
      kind === undefined
        ? undefined
        : planGeneration(kind, fields, deployment, shared.continuation.maxContinuations > 0, body);
    // A continued generation sends the plan's body: the client's bytes can go (a large
    // prompt is held once less for the whole stream).
    if (plan?.continuable === true) body = plan.upstreamBody;

    let sink: ClientSink;
    let webResponse: (() => Response) | undefined;
    if (node) {
      sink = createNodeSink(outgoing, clientIdleTimeoutMs);
      // The client may have left while the body was read: 'close' has then already fired.
      if (outgoing.destroyed || outgoing.socket === null) client.markGone();
      else {
        outgoing.once('close', () => {
          if (!outgoing.writableFinished) client.markGone();
        });
      }
    } else {
      const web = createWebSink(() => client.markGone(), clientIdleTimeoutMs);
      sink = web;
      webResponse = web.response;
      c.req.raw.signal.addEventListener('abort', () => client.markGone(), { once: true });
    }
    const affinityKey =
      deployment.routing === 'prefix-affinity'
        ? (parsed.user ??
          header(c, affinity.sessionHeader) ??
          promptPrefix(parsed.body, affinity.prefixChars))
        : undefined;
    await forward(shared, {
      requestId,
      path,
      body,
      model: parsed.model,
      stream: parsed.stream,
      deployment,
      affinityKey,
      client,
      sink,
      startedAt,
      ...(plan === undefined ? {} : { plan }),
    });
    return webResponse === undefined ? RESPONSE_ALREADY_SENT : webResponse();
  } catch (error) {
    const proxyError =
      error instanceof ProxyError
        ? error
        : new ProxyError(
            'internal_error',
            // Whatever was thrown: an Error, or anything else (a bare rejection).
            `The proxy failed: ${error instanceof Error ? error.message : String(error)}`,
            { status: 500, cause: error },
          );
    const gone = proxyError.code === 'client_closed_request' || client.gone;
    record(shared, base, startedAt, gone ? clientGone() : proxyError, progressOf(error));
    if (gone && node) return RESPONSE_ALREADY_SENT;
    if (node && !outgoing.headersSent) {
      // Straight into Node's response: a flood of bad requests costs no web Response each.
      const text = JSON.stringify(proxyError.toJSON());
      outgoing.writeHead(proxyError.status, {
        ...proxyError.headers,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(text)),
        'x-request-id': requestId,
      });
      outgoing.end(text);
      return RESPONSE_ALREADY_SENT;
    }
    throw proxyError;
  } finally {
    bodyBudget.release(lease.bytes);
  }
}

function record(
  shared: ForwardShared,
  base: Pick<ProxyRequestRecord, 'requestId' | 'path' | 'stream' | 'model' | 'deployment'>,
  startedAt: number,
  error: ProxyError,
  progress: ReturnType<typeof progressOf>,
): void {
  const onComplete = shared.onRequestComplete;
  if (onComplete === undefined) return;
  const outcome =
    error.code === 'client_closed_request'
      ? 'client-abort'
      : error.status >= 500
        ? 'upstream-error'
        : 'rejected';
  const entry: ProxyRequestRecord = {
    ...base,
    status: error.status,
    outcome: error.code === 'queue_full' || error.code === 'no_capacity' ? 'rejected' : outcome,
    errorCode: error.code,
    latencyMs: performance.now() - startedAt,
    queuedMs: progress?.queuedMs ?? 0,
    retries: Math.max(0, (progress?.attempts ?? 0) - 1),
  };
  if (progress?.workerId !== undefined) entry.workerId = progress.workerId;
  onComplete(entry);
}

function pathAndQuery(url: string): string {
  const parsed = new URL(url);
  return parsed.pathname + parsed.search;
}
