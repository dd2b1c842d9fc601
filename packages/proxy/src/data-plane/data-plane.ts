/**
 * One data-plane process (`es-proxy` runs one per `--processes`): the routing table from
 * the scheduler's watch stream, `/v1` served from it by `createProxyApp` with the settings
 * of the stream's snapshot, every other path forwarded to the scheduler's control listener,
 * and reports sent back. Static stability: once a table has arrived, `/v1` keeps being
 * served from it whatever happens to the scheduler.
 */
import { hostname } from 'node:os';
import type { Server, ServerResponse } from 'node:http';
import { DATA_PLANE_REPORT_MS, deriveEngineKey, deriveKeys, readSchedulerUrl } from '@es/protocol';
import type { DataPlaneSettings } from '@es/protocol';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { createProxyApp } from '../app.js';
import type { ProxyApp, ProxyEnv } from '../app.js';
import type { PlantedFaults, RoutingJournal } from '../journal.js';
import type { ProxyLogger } from '../options.js';
import { createRoutingWatchClient } from '../routing-watch-client.js';
import type { RoutingWatchClient, RoutingWatchStatus } from '../routing-watch-client.js';
import { startProxyServer } from '../server.js';
import type { NodeServerFetch } from '../server.js';
import { createControlForwarder } from './control-forward.js';
import { DataPlaneError, sendError } from './errors.js';
import { createReportSender } from './report-sender.js';
import type { ReportResult } from './report-sender.js';

/** Logger of a data-plane process (pino-compatible). */
export interface DataPlaneLogger extends ProxyLogger {
  info(fields: Record<string, unknown>, message: string): void;
}

/** Options of {@link startDataPlane}. */
export interface DataPlaneOptions {
  /** The scheduler's shared secret (the keys are derived from it; it is never sent). */
  secret: string;
  /**
   * The file whose first line is the scheduler's control URL (`<logDir>/control-url`),
   * re-read before every subscription and every forwarded request.
   */
  schedulerUrlFile: string;
  /** The URL used while the file names none. */
  schedulerUrl?: string;
  /**
   * Where to listen. Default `127.0.0.1`, port 0 (any free port). In a `node:cluster`
   * worker with `SCHED_NONE` the primary binds and every worker shares its handle.
   */
  host?: string;
  port?: number;
  /** This process in reports and `es status`. Default `<hostname>:<pid>`. */
  id?: string;
  /** Grace `close()` gives in-flight requests by default (ms). Default 10 000. */
  closeGraceMs?: number;
  /** Default `DATA_PLANE_REPORT_MS`. */
  reportIntervalMs?: number;
  /** Records of each kind kept for the next report at most. Default `DATA_PLANE_MAX_RECORDS`. */
  maxRecords?: number;
  /** Subscription timings (tests shorten them). */
  watch?: { retry?: { initialMs: number; maxMs: number }; silenceMs?: number };
  logger?: DataPlaneLogger;
  /** Reliability runs only: the routing journal and planted faults (`reliabilityHooks`). */
  journal?: RoutingJournal;
  plantedFaults?: PlantedFaults;
  /** Told of each report's fate. */
  onReport?: (result: ReportResult) => void;
  /** Told of each subscription's fate. */
  onWatchStatus?: (status: RoutingWatchStatus) => void;
  /**
   * How long to wait for the first routing table before listening (ms; `Infinity`: until it
   * arrives). Default 0: listen at once, so a port conflict is reported at once and a plane
   * started before its scheduler answers 503 `no_routing_table` with `Retry-After`. A
   * process joining a port its siblings already serve (es-proxy's respawn) waits without
   * bound: until it can serve, the siblings take the connections.
   */
  firstTableWaitMs?: number;
}

/** A serving data-plane process. */
export interface DataPlane {
  id: string;
  /** `http://host:port` */
  url: string;
  port: number;
  server: Server;
  /** The routing table it serves. */
  pool: RoutingWatchClient;
  /** Send a report now (true when the scheduler accepted it). */
  report(): Promise<boolean>;
  /**
   * Stop accepting, let in-flight requests finish up to `graceMs`, stop following the
   * scheduler and send a last report.
   */
  close(graceMs?: number): Promise<void>;
}

const sameSettings = (a: DataPlaneSettings, b: DataPlaneSettings) =>
  JSON.stringify(a) === JSON.stringify(b);

const isV1 = (path: string) => path === '/v1' || path.startsWith('/v1/') || path.startsWith('/v1?');

/**
 * Start one data-plane process; resolves once it listens (with `firstTableWaitMs`, once
 * its first routing table has arrived or the wait is over).
 * @throws {DataPlaneError} `listen_failed` when the address cannot be bound (`cause` holds
 *   the system error, e.g. `EADDRINUSE`).
 * @example
 * const plane = await startDataPlane({ secret: readSecret(file),
 *   schedulerUrlFile: join(logDir, 'control-url'), host: '0.0.0.0', port: 8780 });
 * process.on('SIGTERM', () => void plane.close().then(() => process.exit(0)));
 */
export async function startDataPlane(options: DataPlaneOptions): Promise<DataPlane> {
  const startedAt = Date.now();
  const { dataPlaneKey } = deriveKeys(options.secret);
  const logger = options.logger;
  const closeGraceMs = options.closeGraceMs ?? 10_000;
  const controlUrl = async () => {
    const read = await readSchedulerUrl(options.schedulerUrlFile);
    return read.kind === 'url' ? read.url : options.schedulerUrl;
  };
  let lastWatchProblem: string | undefined;
  let firstTable: () => void = () => undefined;
  const tableArrived = new Promise<void>((resolve) => (firstTable = resolve));
  const pool = createRoutingWatchClient({
    urlFile: options.schedulerUrlFile,
    ...(options.schedulerUrl === undefined ? {} : { url: options.schedulerUrl }),
    key: dataPlaneKey,
    engineKey: (jobId) => deriveEngineKey(options.secret, jobId),
    ...options.watch,
    onStatus: (status) => {
      options.onWatchStatus?.(status);
      if (status.kind === 'subscribed') {
        firstTable();
        lastWatchProblem = undefined;
        logger?.info({ url: status.url, version: status.version }, 'routing table received');
      } else if (status.message !== lastWatchProblem) {
        // Once per problem, not once per retry.
        lastWatchProblem = status.message;
        logger?.warn({ ...status }, `routing watch ${status.kind}: ${status.message}`);
      }
    },
  });
  const control = createControlForwarder();
  /** The address it serves, once it listens. */
  let listen = '';
  const id = options.id ?? `${hostname()}:${process.pid}`;
  const reports = createReportSender({
    key: dataPlaneKey,
    controlUrl,
    identity: () => ({ id, host: hostname(), pid: process.pid, listen, startedAt }),
    state: () => ({
      tableVersion: pool.version ?? 0,
      tableAt: pool.lastEventAt,
      subscribed: pool.connected,
      inFlight: pool.inFlight(),
      ejected: pool.ejected(),
      queued: queued(),
    }),
    intervalMs: options.reportIntervalMs ?? DATA_PLANE_REPORT_MS,
    ...(options.maxRecords === undefined ? {} : { maxRecords: options.maxRecords }),
    ...(options.onReport === undefined ? {} : { onResult: options.onReport }),
  });

  let current: { settings: DataPlaneSettings; app: ProxyApp } | undefined;
  /** Apps replaced by a settings change whose queues still hold requests. */
  const retired = new Set<ProxyApp>();
  /** Requests waiting for a worker, per deployment, over the current app and retired ones. */
  function queued(): Record<string, number> {
    const totals: Record<string, number> = { ...current?.app.queueDepth() };
    for (const app of retired) {
      const depth = Object.entries(app.queueDepth());
      if (depth.length === 0) retired.delete(app);
      for (const [deployment, n] of depth) totals[deployment] = (totals[deployment] ?? 0) + n;
    }
    return totals;
  }
  /** The listening server, once it listens. */
  const listening: { server?: Server } = {};
  // Built lazily at the first /v1 request after a snapshot (or a change of its settings):
  // a settings change takes effect for the next request, in-flight ones finish on theirs.
  const appFor = (settings: DataPlaneSettings): ProxyApp => {
    if (current !== undefined && sameSettings(current.settings, settings)) return current.app;
    const previous = current;
    const app = createProxyApp({
      pool,
      clientKeyHashes: settings.clientKeyHashes,
      corsOrigins: settings.corsOrigins,
      exposeSelectedEndpoint: settings.exposeSelectedEndpoint,
      continuation: {
        maxContinuations: settings.maxContinuations,
        stallTimeoutMs: settings.stallTimeoutMs,
      },
      bodyBudgetBytes: settings.bodyBudgetBytes,
      clientIdleTimeoutMs: settings.clientIdleTimeoutMs,
      ...(settings.coldStartTimeoutMs === undefined
        ? {}
        : { queue: { coldStartTimeoutMs: settings.coldStartTimeoutMs } }),
      onRequestComplete: (record) => reports.addRequest(record),
      onContinuation: (record) => reports.addContinuation(record),
      ...(logger === undefined ? {} : { logger }),
      ...(options.journal === undefined ? {} : { journal: options.journal }),
      ...(options.plantedFaults === undefined ? {} : { plantedFaults: options.plantedFaults }),
    });
    current = { settings, app };
    if (listening.server !== undefined && settings.maxConnections > 0) {
      listening.server.maxConnections = settings.maxConnections;
    }
    if (previous !== undefined) {
      logger?.info({}, 'data-plane settings changed: serving with the new ones');
      retired.add(previous.app);
      // Undici's close lets requests under way on the old pools finish.
      void previous.app.close();
    }
    return app;
  };

  const health = (res: ServerResponse) => {
    const version = pool.version;
    // Ready as the scheduler counts them: this process's own ejections are still ready.
    let ready = pool.ejected().length;
    for (const d of pool.deployments()) ready += pool.routable(d.name).length;
    // The scheduler's /health body, field for field (every process answers the same);
    // what this process knows of its table goes in headers.
    const body = JSON.stringify({
      status: version === undefined ? 'no_routing_table' : 'ok',
      ready_workers: ready,
    });
    res.writeHead(version === undefined ? 503 : 200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'x-es-data-plane': id,
      'x-es-table-version': String(version ?? ''),
      'x-es-subscribed': String(pool.connected),
    });
    res.end(body);
  };

  // Served over HTTP/1.1 only: the bindings are node:http's request and response.
  const fetch: NodeServerFetch = (request, env) => {
    const bindings = env as ProxyEnv['Bindings'];
    const incoming = bindings.incoming!;
    const outgoing = bindings.outgoing!;
    const path = incoming.url ?? '/';
    if (isV1(path)) {
      const settings = pool.settings;
      if (settings === undefined) {
        incoming.resume();
        sendError(
          outgoing,
          new DataPlaneError(
            'no_routing_table',
            `This data-plane process has no routing table yet: it waits for the scheduler's (${options.schedulerUrlFile}). Retry in a few seconds.`,
            { status: 503 },
          ),
          { 'retry-after': '2' },
        );
        return RESPONSE_ALREADY_SENT;
      }
      return appFor(settings).fetch(request, bindings);
    }
    if (path === '/health' || path.startsWith('/health?')) {
      incoming.resume();
      health(outgoing);
      return RESPONSE_ALREADY_SENT;
    }
    void controlUrl()
      .then((url) => control.forward(incoming, outgoing, url, pool.version))
      .catch((error: unknown) => {
        logger?.warn({ err: error }, 'forwarding to the scheduler failed');
        outgoing.destroy();
      });
    return RESPONSE_ALREADY_SENT;
  };

  // Listen once there is a table to serve from, or the wait is over.
  const waitMs = options.firstTableWaitMs ?? 0;
  if (waitMs > 0 && pool.version === undefined) {
    logger?.info({}, 'waiting for a routing table before taking connections');
    let waitTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      tableArrived,
      ...(Number.isFinite(waitMs)
        ? [new Promise<void>((resolve) => (waitTimer = setTimeout(resolve, waitMs)))]
        : []),
    ]);
    clearTimeout(waitTimer);
    if (pool.version === undefined) {
      logger?.warn(
        {},
        `no routing table after ${waitMs / 1000} s: listening anyway, /v1 answers 503 no_routing_table until the scheduler (${options.schedulerUrlFile}) sends one`,
      );
    }
  }
  let proxyServer;
  try {
    proxyServer = await startProxyServer({
      fetch,
      port: options.port ?? 0,
      hostname: options.host ?? '127.0.0.1',
    });
  } catch (error) {
    pool.close();
    control.close();
    await reports.close();
    const where = `${options.host ?? '127.0.0.1'}:${options.port ?? 0}`;
    const code = (error as NodeJS.ErrnoException).code;
    throw new DataPlaneError(
      'listen_failed',
      code === 'EADDRINUSE'
        ? `${where} is in use: stop what listens there (another es-proxy or scheduler?) or pass another --port`
        : `cannot listen on ${where} (${(error as Error).message}): pass a --host of this machine and a free --port`,
      { param: code === 'EADDRINUSE' ? 'port' : 'host', cause: error },
    );
  }
  listening.server = proxyServer.server;
  listen = proxyServer.url;
  let closing: Promise<void> | undefined;
  return {
    id,
    url: proxyServer.url,
    port: proxyServer.port,
    server: proxyServer.server,
    pool,
    report: () => reports.send(),
    close: (graceMs = closeGraceMs) =>
      (closing ??= (async () => {
        await proxyServer.close(graceMs);
        pool.close();
        control.close();
        await current?.app.close();
        // The records of the last requests reach the scheduler if it is there.
        await reports.close(true);
      })()),
  };
}
