import { readFileSync } from 'node:fs';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { PoolEventFeed, PoolOperator, PoolReadModel } from '@es/pool';
import type { DataPlaneView, DrainResponse, ScaleResponse, StatusResponse } from '@es/client';
import { ADMIN_SIGNATURE_HEADERS } from '@es/client';
import { createKeyCheck, openAIErrorBody } from '@es/protocol';
import { createAdminAuth, type AdminAuth, type AdminAuthResult } from './auth.js';
import { AdminError, fromOperatorError } from './errors.js';
import { findLogFile, tailFile } from './logs.js';
import type { Metrics } from './metrics.js';
import { createSessionStore, LOGIN_TOKEN_TTL_MS, SESSION_TTL_MS } from './sessions.js';
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
  /** The data-plane processes (`GET /api/v1/admin/data-plane`, and in the status). */
  dataPlane?: () => DataPlaneView;
  /** `POST /api/v1/admin/stop`: called after the response is sent. */
  stop?: (options: { cancelJobs: boolean }) => unknown;
  /** Clock (default `Date.now`). */
  now?: () => number;
  /**
   * How requests prove the admin key (default: `createAdminAuth` over `adminKey`, from when
   * this app is created). `mountAdmin` passes one it shares with the seed routes.
   */
  auth?: AdminAuth;
}

/** The admin app plus the status it serves. */
export type AdminApi = Hono & {
  /** The current status (what `GET /api/v1/admin/status` answers). */
  status(): StatusResponse;
  /** Stop listening to the event log. */
  close(): void;
};

/** Largest admin request body (bytes): scale and stop send a few bytes of JSON. */
const ADMIN_BODY_LIMIT = 64 * 1024;

/** The dashboard's session cookie: a random id the scheduler keeps, never the admin key. */
const COOKIE = 'es_session';
let dashboardHtml: string | undefined;

function dashboard(): string {
  // tsdown copies the page next to dist/index.mjs, so this works from sources and the build.
  dashboardHtml ??= readFileSync(new URL('./dashboard.html', import.meta.url), 'utf8');
  return dashboardHtml;
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch]!);

function loginPage(problem?: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Elastic Serving — sign in</title>
<style>body{font:15px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;height:100vh;margin:0}
form{background:#1e293b;padding:24px;border-radius:10px}input{font:inherit;padding:6px;width:22em}button{font:inherit;padding:6px 12px}.problem{color:#fca5a5}</style></head>
<body><form method="post" action="/dashboard/login">${problem === undefined ? '' : `<p class="problem">${escapeHtml(problem)}</p>`}<p>This scheduler needs its admin key<br><small>(open the one-time link <code>es dashboard</code> prints, or type the key: --admin-key, ES_ADMIN_KEY, or the admin token derived from its secret file)</small></p>
<input type="password" name="key" autofocus placeholder="admin key"> <button>Sign in</button></form></body></html>`;
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
    const built = buildStatus({
      status: raw,
      now: at,
      startedAt,
      steps: progress.steps,
      queueDepth: options.queueDepth?.() ?? {},
      requestErrors: metrics.requestErrors,
    });
    return options.dataPlane === undefined ? built : { ...built, dataPlane: options.dataPlane() };
  };
  metrics.setStatusSource(status);

  const auth = options.auth ?? createAdminAuth({ adminKey, now, startedAt });
  const formKeyOk = createKeyCheck(adminKey === undefined ? [] : [adminKey]);
  const sessions = createSessionStore(now);
  /**
   * The bearer key or a signed request; for reads also the dashboard's session cookie
   * (actions need the key or a signature, so no page can make a browser that holds the
   * cookie scale or stop anything).
   */
  const authorize = async (c: Context): Promise<AdminAuthResult> => {
    // Only a signed request's body is read before it is authorized (its hash is signed).
    const signed = c.req.header(ADMIN_SIGNATURE_HEADERS.signature) !== undefined;
    const body = signed ? new Uint8Array(await c.req.arrayBuffer()) : new Uint8Array();
    const result = auth.check(c.req.raw, body);
    if (!result.ok && c.req.method === 'GET' && sessions.valid(getCookie(c, COOKIE))) {
      return { ok: true, how: 'bearer' };
    }
    return result;
  };
  const deny = (c: Context, result: Extract<AdminAuthResult, { ok: false }>) =>
    c.json(
      new AdminError(result.status === 503 ? 'not_ready' : 'unauthorized', result.message, {
        ...(result.param === null ? {} : { param: result.param }),
      }).toJSON(),
      result.status,
    );
  /** Admin routes: refused without the key; a signed request's answer is signed too. */
  const guard = async (c: Context, next: () => Promise<void>) => {
    const result = await authorize(c);
    if (!result.ok) return deny(c, result);
    await next();
    if (result.how === 'signed') {
      const body = new Uint8Array(await c.res.clone().arrayBuffer());
      c.res.headers.set(
        ADMIN_SIGNATURE_HEADERS.answer,
        auth.signAnswer(result.nonce, c.res.status, body),
      );
    }
    return undefined;
  };
  const cookieOptions = {
    httpOnly: true,
    sameSite: 'Strict',
    path: '/',
    maxAge: SESSION_TTL_MS / 1000,
  } as const;
  /** Log the browser in: a new session id in the cookie, then the page without the token. */
  const logIn = (c: Context) => {
    setCookie(c, COOKIE, sessions.startSession(), cookieOptions);
    return c.redirect('/dashboard', 303);
  };

  const app = new Hono();
  app.onError((error, c) => {
    if (error instanceof AdminError) return c.json(error.toJSON(), error.status as 400);
    return c.json(openAIErrorBody('internal', String(error.message), 500), 500);
  });

  app.get('/dashboard', (c) => {
    const token = c.req.query('login');
    if (token !== undefined) {
      if (adminKey === undefined || sessions.redeemLoginToken(token)) return logIn(c);
      return c.html(
        loginPage(
          'This login link was used already or is older than a minute: run es dashboard again, or type the admin key.',
        ),
        401,
      );
    }
    if (adminKey !== undefined && !sessions.valid(getCookie(c, COOKIE))) {
      return c.html(loginPage(), 401);
    }
    return c.html(dashboard());
  });
  // The form's key, or a login token typed or pasted in it.
  app.post('/dashboard/login', async (c) => {
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
    const key = typeof form.key === 'string' ? form.key : '';
    if (adminKey === undefined || formKeyOk(key) || sessions.redeemLoginToken(key)) {
      return logIn(c);
    }
    return c.html(loginPage('Wrong admin key (or a used or expired login token).'), 401);
  });
  app.post('/dashboard/logout', (c) => {
    sessions.end(getCookie(c, COOKIE));
    deleteCookie(c, COOKIE, { path: '/' });
    return c.redirect('/dashboard', 303);
  });

  app.use('/metrics', async (c, next) => {
    if (options.publicMetrics) return next();
    return guard(c, next);
  });
  app.get('/metrics', async (c) =>
    c.text(await metrics.render(), 200, {
      'content-type': metrics.registry.contentType,
    }),
  );

  // Admin bodies are a few bytes of JSON: a larger one is refused before it is buffered.
  app.use(
    '/api/v1/admin/*',
    bodyLimit({
      maxSize: ADMIN_BODY_LIMIT,
      onError: (c) =>
        c.json(
          new AdminError(
            'too_large',
            `an admin request body is at most ${ADMIN_BODY_LIMIT / 1024} KiB (they are small JSON objects)`,
          ).toJSON(),
          413,
        ),
    }),
  );
  app.use('/api/v1/admin/*', guard);

  // A one-time link for `es dashboard`: the token is good for one login, for a minute.
  app.post('/api/v1/admin/dashboard/login-token', (c) => {
    const token = sessions.mintLoginToken();
    return c.json({
      path: `/dashboard?login=${token}`,
      token,
      expiresInSeconds: LOGIN_TOKEN_TTL_MS / 1000,
    });
  });

  app.get('/api/v1/admin/status', (c) => c.json(status()));
  app.get('/api/v1/admin/events', (c) => {
    const limit = Number(c.req.query('limit') ?? 200);
    return c.json({ events: events.recentEvents(Number.isFinite(limit) ? limit : 200) });
  });
  app.get('/api/v1/admin/series', (c) => c.json(metrics.series()));
  app.get('/api/v1/admin/data-plane', (c) =>
    c.json(
      options.dataPlane?.() ??
        ({ tableVersion: 0, subscribers: 0, processes: [] } as DataPlaneView),
    ),
  );

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
