import { vValidator } from '@hono/valibot-validator';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type * as v from 'valibot';
import {
  WORKER_API_PREFIX,
  WORKER_ROUTES,
  WORKER_SIGNATURE_HEADERS,
  createWorkerRequestVerifier,
  signWorkerAnswer,
  openAIErrorBody,
} from '@es/protocol';
import type { WorkerRequestCheck } from '@es/protocol';
import { PoolError } from './errors.js';
import type { WorkerLedger } from './roles.js';

/**
 * What {@link createWorkerApi} serves from: a {@link WorkerLedger} (the registry), or one
 * whose answers come later (the worker API's own thread asks the registry's thread).
 */
export type WorkerLedgerLike = {
  [K in keyof WorkerLedger]: (
    ...args: Parameters<WorkerLedger[K]>
  ) => ReturnType<WorkerLedger[K]> | Promise<ReturnType<WorkerLedger[K]>>;
};

/** Options of {@link createWorkerApi}. */
export interface WorkerApiOptions {
  /**
   * `deriveKeys(secret).workerKey`: requests must be signed with it, answers are signed
   * with it (see `signWorkerRequest` of `@es/protocol`).
   */
  workerKey: string;
  /** Largest accepted body in bytes (default 65536). */
  maxBodyBytes?: number;
  /** Signature window, ± ms (default `WORKER_SIGNATURE_WINDOW_MS`, 30 s). */
  windowMs?: number;
  /** Default `Date.now`. */
  now?: () => number;
  /**
   * Requests signed earlier are refused as `stale` (default: `now()` when the API is made,
   * i.e. the scheduler's start): nothing captured before a restart passes after it.
   */
  startedAt?: number;
  /**
   * The ports this API is served on, read at each request: a request must be signed for one
   * of them (`x-es-audience`, as `createWorkerClient` signs), so a request a squatter
   * received on another port cannot be relayed here within the signature window. Default:
   * no audience required.
   */
  audiences?: () => readonly string[];
  /** Where refused requests are logged (at most one line per second and reason). */
  logger?: { warn(fields: Record<string, unknown>, message: string): void };
}

/** Logs refusals, at most one line per code a second, counting the ones it held back. */
function refusalLog(options: WorkerApiOptions, now: () => number) {
  const last = new Map<string, { at: number; held: number }>();
  return (check: Exclude<WorkerRequestCheck, { ok: true }>, fields: Record<string, unknown>) => {
    const logger = options.logger;
    if (logger === undefined) return;
    const at = now();
    const seen = last.get(check.code);
    if (seen !== undefined && at - seen.at < 1_000) {
      seen.held++;
      return;
    }
    last.set(check.code, { at, held: 0 });
    logger.warn(
      { ...fields, code: check.code, ...(seen?.held ? { alsoRefused: seen.held } : {}) },
      `worker request refused (${check.code}): ${check.message}`,
    );
  };
}

/**
 * A route's JSON body validated against its schema by the valibot validator (it parses the
 * text the signature was checked on: Hono keeps it after the first read). A failure answers
 * 400 `invalid_request` naming the first invalid field (`load.running`), as `param`.
 */
function json<S extends v.GenericSchema>(schema: S) {
  return vValidator('json', schema, (result) => {
    if (result.success) return;
    const issue = result.issues[0];
    const field = issue.path?.map((p) => String(p.key)).join('.') ?? 'body';
    throw new PoolError(
      'invalid_request',
      `invalid ${field}: expected ${issue.expected ?? issue.message}, received ${issue.received}`,
      { param: field },
    );
  });
}

/**
 * The worker protocol's server side as a Hono app: register, heartbeat, drain, deregister
 * and handover under `WORKER_API_PREFIX`. Every request must be signed with the worker key
 * (fresh, not before this API was made, its nonce unseen: else 401 `bad_signature`, `stale`
 * or `replayed`); every answer under the prefix is signed over the request's nonce, so a
 * worker can tell it from a squatter's. Mount it on the scheduler's server
 * (`app.route('/', workerApi)`) or serve it alone.
 * @example
 * const api = createWorkerApi(registry, { workerKey: deriveKeys(secret).workerKey });
 * serve({ fetch: api.fetch, port: 8780 });
 */
export function createWorkerApi(registry: WorkerLedgerLike, options: WorkerApiOptions): Hono {
  if (!options.workerKey) {
    throw new PoolError(
      'invalid_config',
      'createWorkerApi needs a non-empty workerKey (deriveKeys(secret).workerKey)',
      { param: 'workerKey' },
    );
  }
  const key = options.workerKey;
  const now = options.now ?? Date.now;
  const verifier = createWorkerRequestVerifier({
    key,
    now,
    ...(options.windowMs === undefined ? {} : { windowMs: options.windowMs }),
    ...(options.startedAt === undefined ? {} : { startedAt: options.startedAt }),
    ...(options.audiences === undefined ? {} : { audiences: options.audiences }),
  });
  const logRefusal = refusalLog(options, now);
  const maxBodyBytes = options.maxBodyBytes ?? 65_536;
  const app = new Hono();

  app.onError((error, c) => {
    const pool =
      error instanceof PoolError
        ? error
        : // The validator's only refusal of its own: a JSON body that does not parse.
          error instanceof HTTPException && error.status === 400
          ? new PoolError('invalid_request', 'body is not valid JSON', { param: 'body' })
          : new PoolError('invalid_request', 'internal error', { status: 500, cause: error });
    return c.json(pool.toJSON(), pool.status as 400);
  });
  app.notFound((c) =>
    c.json(
      new PoolError('invalid_request', `no route ${c.req.method} ${c.req.path}`, {
        status: 404,
      }).toJSON(),
      404,
    ),
  );

  // Every answer under the prefix, refusals included, is signed over the request's nonce.
  app.use(`${WORKER_API_PREFIX}/*`, async (c, next) => {
    await next();
    const nonce = c.req.header(WORKER_SIGNATURE_HEADERS.nonce) ?? '';
    const { status } = c.res;
    const bytes = new Uint8Array(await c.res.arrayBuffer());
    const headers = new Headers(c.res.headers);
    headers.set(
      WORKER_SIGNATURE_HEADERS.signature,
      signWorkerAnswer(key, { nonce, status, body: bytes }),
    );
    c.res = new Response(bytes, { status, headers });
  });

  app.use(`${WORKER_API_PREFIX}/*`, async (c, next) => {
    const length = Number(c.req.header('content-length') ?? 0);
    if (length > maxBodyBytes) {
      throw new PoolError('invalid_request', `body larger than ${maxBodyBytes} bytes`, {
        status: 413,
      });
    }
    const text = await c.req.text();
    if (Buffer.byteLength(text) > maxBodyBytes) {
      throw new PoolError('invalid_request', `body larger than ${maxBodyBytes} bytes`, {
        status: 413,
      });
    }
    const check = verifier.verify({
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      body: text,
      header: (name) => c.req.header(name),
    });
    if (!check.ok) {
      logRefusal(check, { method: c.req.method, path: c.req.path });
      return c.json(
        openAIErrorBody(check.code, check.message, check.status, check.param),
        check.status,
      );
    }
    await next();
  });

  app.post(WORKER_ROUTES.register.path, json(WORKER_ROUTES.register.request), async (c) =>
    c.json(await registry.register(c.req.valid('json'))),
  );
  app.post(WORKER_ROUTES.heartbeat.path, json(WORKER_ROUTES.heartbeat.request), async (c) => {
    await registry.heartbeat(c.req.param('workerId'), c.req.valid('json'));
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.drain.path, json(WORKER_ROUTES.drain.request), async (c) => {
    await registry.drain(c.req.param('workerId'), c.req.valid('json').reason);
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.deregister.path, json(WORKER_ROUTES.deregister.request), async (c) => {
    await registry.deregister(c.req.param('workerId'), c.req.valid('json').reason);
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.handover.path, json(WORKER_ROUTES.handover.request), async (c) => {
    const { workerIds, reason, stopInMs } = c.req.valid('json');
    return c.json({ ok: true, handedOver: await registry.handOver(workerIds, reason, stopInMs) });
  });
  return app;
}
