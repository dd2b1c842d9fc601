import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import { WORKER_API_PREFIX, WORKER_ROUTES } from '@es/protocol';
import { PoolError } from './errors.js';
import type { WorkerLedger } from './roles.js';

/** Options of {@link createWorkerApi}. */
export interface WorkerApiOptions {
  /** Bearer token workers present (`deriveKeys(secret).workerToken`). */
  workerToken: string;
  /** Largest accepted body in bytes (default 65536). */
  maxBodyBytes?: number;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * The worker protocol's server side as a Hono app: register, heartbeat, drain, deregister
 * and handover under `WORKER_API_PREFIX`, authenticated with the worker token. Mount it on
 * the scheduler's server (`app.route('/', workerApi)`) or serve it alone.
 * @example
 * const api = createWorkerApi(registry, { workerToken: deriveKeys(secret).workerToken });
 * serve({ fetch: api.fetch, port: 8780 });
 */
export function createWorkerApi(registry: WorkerLedger, options: WorkerApiOptions): Hono {
  if (!options.workerToken) {
    throw new PoolError('invalid_config', 'createWorkerApi needs a non-empty workerToken', {
      param: 'workerToken',
    });
  }
  // Comparing fixed-length digests keeps the comparison constant-time whatever the length.
  const expected = digest(options.workerToken);
  const maxBodyBytes = options.maxBodyBytes ?? 65_536;
  const app = new Hono();

  app.onError((error, c) => {
    const pool =
      error instanceof PoolError
        ? error
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

  app.use(`${WORKER_API_PREFIX}/*`, async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7) : '';
    if (!timingSafeEqual(digest(token), expected)) {
      throw new PoolError('unauthorized', 'missing or wrong worker token', {
        param: 'authorization',
      });
    }
    await next();
  });

  async function body<S extends v.GenericSchema>(c: Context, schema: S): Promise<v.InferOutput<S>> {
    const length = Number(c.req.header('content-length') ?? 0);
    if (length > maxBodyBytes) {
      throw new PoolError('invalid_request', `body larger than ${maxBodyBytes} bytes`, {
        status: 413,
      });
    }
    let raw: unknown;
    try {
      raw = await c.req.json();
    } catch {
      throw new PoolError('invalid_request', 'body is not valid JSON', { param: 'body' });
    }
    const result = v.safeParse(schema, raw);
    if (!result.success) {
      const issue = result.issues[0];
      const field = issue?.path?.map((p) => String(p.key)).join('.') ?? 'body';
      throw new PoolError(
        'invalid_request',
        `invalid ${field}: expected ${issue?.expected ?? issue?.message}, received ${issue?.received}`,
        { param: field },
      );
    }
    return result.output;
  }

  app.post(WORKER_ROUTES.register.path, async (c) => {
    const request = await body(c, WORKER_ROUTES.register.request);
    return c.json(registry.register(request));
  });
  app.post(WORKER_ROUTES.heartbeat.path, async (c) => {
    const request = await body(c, WORKER_ROUTES.heartbeat.request);
    registry.heartbeat(c.req.param('workerId'), request);
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.drain.path, async (c) => {
    const { reason } = await body(c, WORKER_ROUTES.drain.request);
    registry.drain(c.req.param('workerId'), reason);
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.deregister.path, async (c) => {
    const { reason } = await body(c, WORKER_ROUTES.deregister.request);
    registry.deregister(c.req.param('workerId'), reason);
    return c.json({ ok: true });
  });
  app.post(WORKER_ROUTES.handover.path, async (c) => {
    const { workerIds, reason, stopInMs } = await body(c, WORKER_ROUTES.handover.request);
    return c.json({ ok: true, handedOver: registry.handOver(workerIds, reason, stopInMs) });
  });
  return app;
}
