/**
 * The server side of the routing-table watch stream (`ROUTING_WATCH_ROUTE` of
 * `@es/protocol`): a snapshot of the deployments and of the routable workers, then every
 * routing change of the registry, each line signed for the subscription.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ROUTING_WATCH_HEARTBEAT_MS,
  ROUTING_WATCH_ROUTE,
  createRoutingWatchSigner,
  createWorkerRequestVerifier,
  openAIErrorBody,
} from '@es/protocol';
import type {
  DataPlaneSettings,
  RoutingWatchDeployment,
  RoutingWatchEvent,
  RoutingWatchWorker,
  WorkerRequestVerifier,
} from '@es/protocol';
import type { ControlPlaneRouting } from './roles.js';
import type { DeploymentView, RoutableWorker } from './view.js';

/**
 * What the stream reads: the deployments and the CONTROL-PLANE routable sets and their
 * changes (the registry's `controlRoutable`): a worker this process ejected for its own
 * failed attempts stays in every data-plane process's table, a drain or a removal leaves it.
 */
export type RoutingWatchSource = ControlPlaneRouting;

/** Options of {@link createRoutingWatchServer}. */
export interface RoutingWatchServerOptions {
  /** The registry (or any source of the same three things). */
  pool: RoutingWatchSource;
  /** `deriveKeys(secret).dataPlaneKey`: checks subscriptions and signs every line. */
  key: string;
  /** The settings sent in each snapshot (read at each subscription). */
  dataPlane: () => DataPlaneSettings;
  /**
   * The check of subscriptions (default: `createWorkerRequestVerifier({ key })`; pass one
   * with `audiences` to require the port).
   */
  verifier?: WorkerRequestVerifier;
  /**
   * Bytes a subscriber may leave unread in this process (beyond the kernel's socket
   * buffers) before it is dropped (default 1 MiB): a data-plane process that stops reading
   * resubscribes and gets a fresh snapshot, it never makes the scheduler buffer forever.
   */
  maxBufferedBytes?: number;
  /** Interval of heartbeat lines (default `ROUTING_WATCH_HEARTBEAT_MS`). */
  heartbeatMs?: number;
  /**
   * Which key a worker's front requires (default: `job` when the registry gives the worker
   * an `upstreamKey`, which the scheduler derives from the job id, `deployment` otherwise).
   */
  keyOf?: (worker: RoutableWorker) => RoutingWatchWorker['key'];
}

/** See {@link createRoutingWatchServer}. */
export interface RoutingWatchServer {
  /**
   * Serves `GET /api/v1/routing/watch`; returns `false` (and does nothing) for any other
   * request, so it can sit in front of another handler.
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** Streams open now. */
  readonly subscribers: number;
  /** Subscribers dropped because they stopped reading. */
  readonly dropped: number;
  /** The table's version: one more per change sent. */
  readonly version: number;
  /** Ends every stream and stops listening to the registry. */
  close(): void;
}

interface Subscriber {
  res: ServerResponse;
  line(event: RoutingWatchEvent): string;
}

function wireDeployment(d: DeploymentView): RoutingWatchDeployment {
  return {
    name: d.name,
    modelNames: [...d.modelNames],
    model: d.model,
    engine: d.engine,
    routing: d.routing,
    ...(d.chatParsers === undefined ? {} : { chatParsers: { ...d.chatParsers } }),
    ...(d.scalesFromZero === undefined ? {} : { scalesFromZero: d.scalesFromZero }),
    ...(d.expectedReadyAt === undefined ? {} : { expectedReadyAt: d.expectedReadyAt }),
  };
}

/**
 * The watch stream over a registry, as a `node:http` handler.
 * @example
 * const watch = createRoutingWatchServer({ pool: registry, key: deriveKeys(secret).dataPlaneKey });
 * http.createServer((req, res) => watch.handle(req, res) || other(req, res));
 */
export function createRoutingWatchServer(options: RoutingWatchServerOptions): RoutingWatchServer {
  const { pool, key } = options;
  const verifier = options.verifier ?? createWorkerRequestVerifier({ key });
  const maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;
  const keyOf =
    options.keyOf ?? ((w: RoutableWorker) => (w.upstreamKey === undefined ? 'deployment' : 'job'));
  const subscribers = new Set<Subscriber>();
  let version = 0;
  let dropped = 0;
  let sentViews = pool.deployments();
  let sentDeployments = new Map(sentViews.map((d) => [d.name, JSON.stringify(wireDeployment(d))]));

  const wireWorker = (w: RoutableWorker): RoutingWatchWorker => ({
    id: w.id,
    deployment: w.deployment,
    baseUrl: w.baseUrl,
    key: keyOf(w),
  });

  const send = (sub: Subscriber, event: RoutingWatchEvent) => {
    sub.res.write(sub.line(event));
    if (sub.res.writableLength > maxBuffered) {
      subscribers.delete(sub);
      dropped += 1;
      sub.res.destroy();
    }
  };
  const broadcast = (event: RoutingWatchEvent) => {
    for (const sub of [...subscribers]) send(sub, event);
  };

  // Compared whenever something is sent, and at once when the source announces a change of
  // its deployments (a registry does: a new expected start of a cold deployment's node).
  const syncDeployments = () => {
    const views = pool.deployments();
    if (views === sentViews) return;
    sentViews = views;
    const now = new Map(views.map((d) => [d.name, JSON.stringify(wireDeployment(d))]));
    for (const name of sentDeployments.keys()) {
      if (!now.has(name)) broadcast({ type: 'deployment-removed', version: ++version, name });
    }
    for (const d of views) {
      if (sentDeployments.get(d.name) !== now.get(d.name)) {
        broadcast({ type: 'deployment-added', version: ++version, deployment: wireDeployment(d) });
      }
    }
    sentDeployments = now;
  };

  const unsubscribe = pool.onControlRoutingChange((change) => {
    syncDeployments();
    if (change.routable) {
      const worker = pool.controlRoutable(change.deployment).find((w) => w.id === change.workerId);
      if (worker === undefined) return;
      broadcast({
        type: 'worker-routable',
        version: ++version,
        worker: wireWorker(worker),
        reason: change.reason,
      });
    } else {
      broadcast({
        type: 'worker-unroutable',
        version: ++version,
        deployment: change.deployment,
        workerId: change.workerId,
        reason: change.reason,
      });
    }
  });

  const unsubscribeDeployments = pool.onDeploymentChange?.(() => syncDeployments());

  const heartbeat = setInterval(() => {
    syncDeployments();
    broadcast({ type: 'heartbeat', version });
  }, options.heartbeatMs ?? ROUTING_WATCH_HEARTBEAT_MS);
  heartbeat.unref();

  const refuse = (
    res: ServerResponse,
    status: number,
    code: string,
    message: string,
    param?: string,
  ) => {
    const body = JSON.stringify(openAIErrorBody(code, message, status, param));
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  };

  return {
    get subscribers() {
      return subscribers.size;
    },
    get dropped() {
      return dropped;
    },
    get version() {
      return version;
    },
    handle(req, res) {
      const path = (req.url ?? '').split('?')[0];
      if (path !== ROUTING_WATCH_ROUTE.path) return false;
      if (req.method !== ROUTING_WATCH_ROUTE.method) {
        refuse(res, 405, 'method_not_allowed', `${path} is ${ROUTING_WATCH_ROUTE.method} only`);
        return true;
      }
      const check = verifier.verify({
        method: 'GET',
        path,
        body: '',
        header: (name) => {
          const value = req.headers[name];
          return Array.isArray(value) ? value[0] : value;
        },
      });
      if (!check.ok) {
        refuse(res, check.status, check.code, check.message, check.param);
        return true;
      }
      syncDeployments();
      const sub: Subscriber = { res, ...createRoutingWatchSigner(key, check.nonce) };
      res.writeHead(200, {
        'content-type': ROUTING_WATCH_ROUTE.contentType,
        'cache-control': 'no-store',
        'x-accel-buffering': 'no',
      });
      res.socket?.setNoDelay(true);
      subscribers.add(sub);
      res.on('close', () => subscribers.delete(sub));
      const views = pool.deployments();
      send(sub, {
        type: 'snapshot',
        version,
        deployments: views.map(wireDeployment),
        workers: views.flatMap((d) => pool.controlRoutable(d.name).map(wireWorker)),
        dataPlane: options.dataPlane(),
      });
      return true;
    },
    close() {
      clearInterval(heartbeat);
      unsubscribe();
      unsubscribeDeployments?.();
      for (const sub of subscribers) sub.res.destroy();
      subscribers.clear();
    },
  };
}
