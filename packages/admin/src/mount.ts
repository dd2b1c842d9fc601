import type { Context, Hono } from 'hono';
import type { NodeProvider, PoolEvent, PoolEventFeed, PoolOperator, PoolReadModel } from '@es/pool';
import type { ContinuationRecord, ProxyRequestRecord } from '@es/proxy';
import { ADMIN_SIGNATURE_HEADERS, type DataPlaneView } from '@es/client';
import { createAdminApi, type AdminApi } from './api.js';
import { createAdminAuth } from './auth.js';
import { AdminError } from './errors.js';
import { instrumentProvider } from './instrument.js';
import { createMetrics, type Metrics, type MetricsOptions } from './metrics.js';

/** Options of {@link mountAdmin}. */
export interface MountAdminOptions {
  /** Lifecycle events, counted in `/metrics` from the start (the registry). */
  events: PoolEventFeed;
  /** Directory of the job logs. */
  logDir: string;
  /** Admin key (`--admin-key`, else the admin token derived from the secret). */
  adminKey?: string;
  /** Serve `/metrics` without the admin key (default false). */
  publicMetrics?: boolean;
  /**
   * The ports the scheduler listens on, read at each request: a signed admin request must be
   * signed for one of them (a request a squatter on another port received is not relayed
   * here). Undefined: any.
   */
  ports?: () => readonly number[];
  metrics?: MetricsOptions;
}

/** What `attach` needs once the reconciler exists. */
export interface AdminAttachment {
  /** Scale and drains (the reconciler). */
  operator: PoolOperator;
  /** The status (the reconciler). */
  readModel: PoolReadModel;
  /** The proxy's `queueDepth`. */
  queueDepth?: () => Record<string, number>;
  /** `POST /api/v1/admin/stop` calls it (e.g. the scheduler's `close`, then exit). */
  stop?: (options: { cancelJobs: boolean }) => unknown;
  /** The data-plane processes and the scheduler's table version. */
  dataPlane?: () => DataPlaneView;
}

/** The handle {@link mountAdmin} returns. */
export interface MountedAdmin {
  metrics: Metrics;
  /** Pass as the proxy's `onRequestComplete`. */
  onRequestComplete(record: ProxyRequestRecord): void;
  /** Pass as (or call from) the proxy's `onContinuation`. */
  onContinuation(record: ContinuationRecord): void;
  /** Wrap the provider so sbatch/squeue/scancel outcomes are counted. */
  instrumentProvider<P extends NodeProvider>(provider: P): P;
  /**
   * Whether `request` proves the admin key (bearer or signed, as the admin API takes it): the
   * seed routes show nodes, addresses, job ids and errors only then.
   */
  isAdmin(request: Request): Promise<boolean>;
  /** Serve the routes (they answer 503 until then). */
  attach(attachment: AdminAttachment): AdminApi;
  /** Stop timers and listeners. */
  close(): void;
}

/**
 * Mount `/api/v1/admin/*`, `/metrics` and `/dashboard` on the scheduler's app now (before the
 * server starts; Hono's router is frozen by the first request) and `attach` the operator and
 * read model (the reconciler) once they exist.
 * @example
 * const admin = mountAdmin(app, { events: registry, logDir, adminKey });
 * const provider = admin.instrumentProvider(createSlurmProvider({}));
 * const proxy = createProxyApp({ pool: registry, onRequestComplete: admin.onRequestComplete });
 * // ... server, reconciler ...
 * admin.attach({ operator: reconciler, readModel: reconciler,
 *   queueDepth: () => proxy.queueDepth(), stop });
 */
export function mountAdmin(app: Hono, options: MountAdminOptions): MountedAdmin {
  const metrics = createMetrics(options.metrics);
  const now = Date.now;
  // One verifier for the admin API and the seed routes: a nonce used on one is used up.
  const ports = options.ports;
  const auth = createAdminAuth({
    adminKey: options.adminKey,
    now,
    startedAt: now(),
    ...(ports === undefined ? {} : { audiences: () => ports().map(String) }),
  });
  const unsubscribe = options.events.on((event: PoolEvent) => metrics.observeEvent(event));
  let api: AdminApi | undefined;
  const handler = (c: Context) => {
    if (api === undefined) {
      const error = new AdminError('not_ready', 'the scheduler is starting: try again in a second');
      return c.json(error.toJSON(), 503);
    }
    return api.fetch(c.req.raw);
  };
  app.all('/api/v1/admin/*', handler);
  app.get('/metrics', handler);
  app.get('/dashboard', handler);
  app.post('/dashboard/login', handler);
  app.post('/dashboard/logout', handler);
  return {
    metrics,
    onRequestComplete: (record) => metrics.observeRequest(record),
    onContinuation: (record) => metrics.observeContinuation(record),
    instrumentProvider: (provider) => instrumentProvider(provider, metrics),
    async isAdmin(request) {
      // A body is read only when it is signed (the seed routes are GETs: none).
      const signed = request.headers.has(ADMIN_SIGNATURE_HEADERS.signature);
      const body = signed ? new Uint8Array(await request.clone().arrayBuffer()) : new Uint8Array();
      return auth.check(request, body).ok;
    },
    attach(attachment) {
      api?.close();
      const apiOptions: Parameters<typeof createAdminApi>[0] = {
        operator: attachment.operator,
        readModel: attachment.readModel,
        events: options.events,
        metrics,
        logDir: options.logDir,
        auth,
        now,
      };
      if (options.adminKey !== undefined) apiOptions.adminKey = options.adminKey;
      if (options.publicMetrics !== undefined) apiOptions.publicMetrics = options.publicMetrics;
      if (attachment.queueDepth !== undefined) apiOptions.queueDepth = attachment.queueDepth;
      if (attachment.stop !== undefined) apiOptions.stop = attachment.stop;
      if (attachment.dataPlane !== undefined) apiOptions.dataPlane = attachment.dataPlane;
      api = createAdminApi(apiOptions);
      return api;
    },
    close() {
      unsubscribe();
      api?.close();
      metrics.close();
    },
  };
}
