import { readFileSync } from 'node:fs';
import { Hono, type Context } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import type { PoolEventFeed, PoolOperator, PoolReadModel } from '@es/pool';
import type { DrainResponse, ScaleResponse, StatusResponse } from '@es/client';
import { bearer, keyMatches } from './auth.js';
import { AdminError, fromOperatorError } from './errors.js';
import { findLogFile, tailFile } from './logs.js';
import type { Metrics } from './metrics.js';
import { buildStatus, createProgressTracker } from './status-view.js';

/** Options of {@link createAdminApi}. */
export interface AdminApiOptions {
  /** The pool's commands behind scale and drain (the scheduler's reconciler). */
  operator: PoolOperator;
  /** What the status, `/metrics` and the log look-up read (the scheduler's reconciler). */
  readModel: PoolReadModel;
  /** Lifecycle events: the events route and each job's progress (the registry). */
  events: PoolEventFeed;
  /** Fed from the proxy and the event log by the caller (see `mountAdmin`). */
  metrics: Metrics;
  /** Directory of the job logs (`<job name>-<job id>.out`). */
  logDir: string;
  /**
   * Bearer key required on every route of this app. Unset: no auth (only sensible on a
   * loopback-only scheduler).
   */
  adminKey?: string;
  /** Serve `/metrics` without the admin key (default false). */
  publicMetrics?: boolean;
  /** Requests waiting for capacity, per deployment (the proxy's `queueDepth`). */
  queueDepth?: () => Record<string, number>;
  /** `POST /api/v1/admin/stop`: called after the response is sent. */
  stop?: (options: { cancelJobs: boolean }) => unknown;
  /** Clock (default `Date.now`). */
  now?: () => number;
}

/** The admin app plus the status it serves. */
export type AdminApi = Hono & {
  /** The current status (what `GET /api/v1/admin/status` answers). */
  status(): StatusResponse;
  /** Stop listening to the event log. */
  close(): void;
};

const COOKIE = 'es_admin_key';
let dashboardHtml: string | undefined;

function dashboard(): string {
  // tsdown copies the page next to dist/index.mjs, so this works from sources and the build.
  dashboardHtml ??= readFileSync(new URL('./dashboard.html', import.meta.url), 'utf8');
  return dashboardHtml;
}

const LOGIN_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Elastic Serving — sign in</title>
<style>body{font:15px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;height:100vh;margin:0}
form{background:#1e293b;padding:24px;border-radius:10px}input{font:inherit;padding:6px;width:22em}button{font:inherit;padding:6px 12px}</style></head>
<body><form method="get" action="/dashboard"><p>This scheduler needs its admin key<br><small>(--admin-key, ES_ADMIN_KEY, or the admin token derived from its secret file)</small></p>
<input type="password" name="key" autofocus placeholder="admin key"> <button>Open</button></form></body></html>`;

function errorBody(error: AdminError) {
  return {
    error: {
      message: error.message,
      type: error.status === 401 ? 'authentication_error' : 'invalid_request_error',
      param: error.param,
      code: error.code,
    },
  };
}

/**
 * The admin/status API, `/metrics` and the dashboard, as one Hono app.
 * An HTTP edge only: scaling and drains are the operator's operations, the status its read
 * model's, so the routes validate, call and answer.
 * @example
 * const metrics = createMetrics();
 * const admin = createAdminApi({ operator: reconciler, readModel: reconciler,
 *   events: registry, metrics, logDir: 'logs', adminKey });
 * app.route('/', admin);
 */
export function createAdminApi(options: AdminApiOptions): AdminApi {
  const { operator, readModel, events, metrics, adminKey } = options;
  const now = options.now ?? Date.now;
  const startedAt = now();
  const progress = createProgressTracker();
  for (const event of events.recentEvents()) progress.observeEvent(event);
  const unsubscribe = events.on((event) => progress.observeEvent(event));

  /** Run an operator command; its refusals answer with the route's parameter names. */
  const operate = async <T>(run: () => T | Promise<T>, params: Record<string, string>) => {
    try {
      return await run();
    } catch (error) {
      throw fromOperatorError(error, params);
    }
  };

  const status = (): StatusResponse => {
    const at = now();
    const raw = readModel.status();
    progress.observeStatus(raw, at);
    return buildStatus({
      status: raw,
      now: at,
      startedAt,
      steps: progress.steps,
      queueDepth: options.queueDepth?.() ?? {},
      requestErrors: metrics.requestErrors,
    });
  };
  metrics.setStatusSource(status);

  const authorized = (c: Context): boolean =>
    adminKey === undefined ||
    keyMatches(bearer(c.req.header('authorization')), adminKey) ||
    // The dashboard's cookie reads only: actions need the bearer key, so no page can make a
    // browser that holds the cookie scale or stop anything.
    (c.req.method === 'GET' && keyMatches(getCookie(c, COOKIE), adminKey));
  const deny = (c: Context) =>
    c.json(
      errorBody(
        new AdminError(
          'unauthorized',
          'admin key required: send Authorization: Bearer <admin key> (es: --admin-key or ES_ADMIN_KEY)',
        ),
      ),
      401,
    );

  const app = new Hono();
  app.onError((error, c) => {
    if (error instanceof AdminError) return c.json(errorBody(error), error.status as 400);
    return c.json(
      {
        error: {
          message: String(error.message),
          type: 'server_error',
          param: null,
          code: 'internal',
        },
      },
      500,
    );
  });

  app.get('/dashboard', (c) => {
    const key = c.req.query('key');
    if (adminKey !== undefined && key !== undefined) {
      if (!keyMatches(key, adminKey)) return c.html(LOGIN_PAGE, 401);
      // The key travels once in the URL; from then on a cookie scoped to this origin.
      setCookie(c, COOKIE, key, { httpOnly: true, sameSite: 'Strict', path: '/' });
      return c.redirect('/dashboard', 303);
    }
    if (!authorized(c)) return c.html(LOGIN_PAGE, 401);
    return c.html(dashboard());
  });

  app.get('/metrics', async (c) => {
    if (!options.publicMetrics && !authorized(c)) return deny(c);
    return c.text(await metrics.render(), 200, {
      'content-type': metrics.registry.contentType,
    });
  });

  app.use('/api/v1/admin/*', async (c, next) => {
    if (!authorized(c)) return deny(c);
    await next();
  });

  app.get('/api/v1/admin/status', (c) => c.json(status()));
  app.get('/api/v1/admin/events', (c) => {
    const limit = Number(c.req.query('limit') ?? 200);
    return c.json({ events: events.recentEvents(Number.isFinite(limit) ? limit : 200) });
  });
  app.get('/api/v1/admin/series', (c) => c.json(metrics.series()));

  app.post('/api/v1/admin/deployments/:name/scale', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { maxNodes?: unknown };
    const name = c.req.param('name');
    const scaled: ScaleResponse = await operate(
      () => operator.setMaxNodes(name, Number(body.maxNodes)),
      { deployment: 'name', maxNodes: 'maxNodes' },
    );
    return c.json(scaled);
  });
  app.post('/api/v1/admin/workers/:id/drain', async (c) => {
    const id = c.req.param('id');
    const drained: DrainResponse = await operate(() => operator.drainWorker(id), {
      workerId: 'id',
    });
    return c.json(drained);
  });
  // Drained now; the reconciler cancels the job once idle and replaces it.
  app.post('/api/v1/admin/jobs/:id/drain', async (c) => {
    const id = c.req.param('id');
    const drained: DrainResponse = await operate(() => operator.drainJob(id), { jobId: 'id' });
    return c.json(drained);
  });

  app.get('/api/v1/admin/logs/:id', async (c) => {
    const file = await findLogFile(readModel, options.logDir, c.req.param('id'));
    const since = c.req.query('since');
    const bytes = c.req.query('bytes');
    const tail: { since?: number; bytes?: number } = {};
    if (since !== undefined) tail.since = Number(since);
    if (bytes !== undefined) tail.bytes = Number(bytes);
    return c.json(await tailFile(file, tail));
  });

  app.post('/api/v1/admin/stop', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { cancelJobs?: unknown };
    const cancelJobs = body.cancelJobs === true;
    if (options.stop === undefined) {
      throw new AdminError('not_ready', 'this scheduler cannot be stopped through the API');
    }
    const stop = options.stop;
    // Answer first: stopping closes the server this response goes out on.
    setTimeout(() => void stop({ cancelJobs }), 50).unref();
    return c.json({ stopping: true, cancelJobs });
  });

  return Object.assign(app, {
    status,
    close: () => {
      unsubscribe();
    },
  });
}
