/**
 * The scheduler's side of its data plane (`es-proxy` processes): the routing-table watch
 * stream they subscribe to (a `node:http` handler: a long-lived NDJSON response) and the
 * route their reports arrive on (a Hono sub-app), with the ledger the reports fill. The
 * request and continuation records a report carries go to the same hooks as the in-process
 * proxy's, so `/metrics` and the dashboard count every process.
 */
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AdminAttachment } from '@es/admin';
import {
  createDataPlaneLedger,
  createRoutingWatchServer,
  type DataPlaneAccounting,
  type DataPlaneLedger,
  type RoutingWatchServer,
  type RoutingWatchSource,
} from '@es/pool';
import {
  DATA_PLANE_ROUTES,
  DataPlaneReportSchema,
  clientKeyHash,
  createWorkerRequestVerifier,
  openAIErrorBody,
  type DataPlaneSettings,
} from '@es/protocol';
import type { ContinuationRecord, ProxyRequestRecord } from '@es/proxy';
import type { SchedulerSettings } from './settings.js';

/** Largest report body (bytes): up to `DATA_PLANE_MAX_RECORDS` records of each kind. */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;

/** The settings every data-plane process serves with, from the scheduler's flags. */
export function dataPlaneSettings(
  settings: Pick<
    SchedulerSettings,
    | 'apiKeys'
    | 'corsOrigins'
    | 'exposeSelectedEndpoint'
    | 'maxContinuations'
    | 'stallTimeoutS'
    | 'bodyBudgetMb'
    | 'clientIdleTimeoutS'
    | 'maxConnections'
    | 'coldStartWaitS'
  >,
): DataPlaneSettings {
  return {
    clientKeyHashes: settings.apiKeys.map(clientKeyHash),
    corsOrigins: [...settings.corsOrigins],
    exposeSelectedEndpoint: settings.exposeSelectedEndpoint,
    maxContinuations: settings.maxContinuations,
    stallTimeoutMs: settings.stallTimeoutS * 1000,
    bodyBudgetBytes: settings.bodyBudgetMb * 1024 * 1024,
    clientIdleTimeoutMs: settings.clientIdleTimeoutS * 1000,
    maxConnections: settings.maxConnections,
    coldStartTimeoutMs: settings.coldStartWaitS * 1000,
  };
}

/** What the admin API and `es status` show of the data plane. */
type DataPlaneView = ReturnType<NonNullable<AdminAttachment['dataPlane']>>;

/** Where the records of every data-plane process go (the admin's hooks). */
export interface DataPlaneRecordHooks {
  onRequestComplete(record: ProxyRequestRecord): void;
  onContinuation(record: ContinuationRecord): void;
}

/** Options of {@link createDataPlaneRoutes}. */
export interface DataPlaneRoutesOptions {
  /** The control-plane routable sets the stream carries, and the served counts (the registry). */
  registry: RoutingWatchSource & DataPlaneAccounting;
  /** `deriveKeys(secret).dataPlaneKey`: checks reports and subscriptions, signs the stream. */
  dataPlaneKey: string;
  /** Sent in each snapshot (see {@link dataPlaneSettings}). */
  settings: DataPlaneSettings;
  /** Fed each accepted report's records. */
  hooks: DataPlaneRecordHooks;
  /** The ledger's clock and silence (tests); default `Date.now`, `DATA_PLANE_SILENT_MS`. */
  ledger?: { now?: () => number; silentMs?: number };
}

/** See {@link createDataPlaneRoutes}. */
export interface DataPlaneRoutes {
  /** `POST DATA_PLANE_ROUTES.report.path`: mount with `app.route('/', routes.app)`. */
  app: Hono;
  /** The watch stream: try `watch.handle(req, res)` before the Hono adaptor. */
  watch: RoutingWatchServer;
  /** The processes that reported. */
  ledger: DataPlaneLedger;
  /** The processes and the scheduler's table version (the admin's `dataPlane`). */
  view(): DataPlaneView;
  /**
   * Requests waiting for a worker in the data-plane processes' queues, per deployment (as
   * their last reports say, `serving` processes only; deployments with none left out). Add
   * the in-process proxy's `queueDepth()` for the whole demand waiting.
   */
  queuedRequests(): Record<string, number>;
  /** Ends every stream. */
  close(): void;
}

/**
 * The watch stream and the report route over the registry.
 * @example
 * const dataPlane = createDataPlaneRoutes({ registry, dataPlaneKey: keys.dataPlaneKey,
 *   settings: dataPlaneSettings(settings), hooks: admin });
 * app.route('/', dataPlane.app);
 * await startProxyServer({ fetch: app.fetch, handle: dataPlane.watch.handle });
 */
export function createDataPlaneRoutes(options: DataPlaneRoutesOptions): DataPlaneRoutes {
  const { hooks, dataPlaneKey: key, settings } = options;
  const watch = createRoutingWatchServer({
    pool: options.registry,
    key,
    dataPlane: () => settings,
  });
  const ledger = createDataPlaneLedger({
    ...options.ledger,
    onRecords: ({ requests, continuations }) => {
      // Checked by DataPlaneReportSchema for the fields the metrics read; the rest passes.
      const served = new Map<string, number>();
      for (const record of requests) {
        hooks.onRequestComplete(record as ProxyRequestRecord);
        const { workerId } = record as ProxyRequestRecord;
        if (record.outcome === 'ok' && workerId !== undefined) {
          served.set(workerId, (served.get(workerId) ?? 0) + 1);
        }
      }
      for (const [workerId, count] of served) options.registry.recordServed(workerId, count);
      options.registry.recordDataPlaneInFlight(ledger.inFlightByWorker());
      for (const record of continuations) hooks.onContinuation(record as ContinuationRecord);
    },
  });
  const verifier = createWorkerRequestVerifier({ key });
  const { path } = DATA_PLANE_ROUTES.report;
  const app = new Hono();
  app.post(path, async (c) => {
    const refuse = (status: 400 | 401 | 413 | 503, code: string, message: string, param?: string) =>
      c.json(openAIErrorBody(code, message, status, param), status);
    if (Number(c.req.header('content-length') ?? 0) > MAX_REPORT_BYTES) {
      return refuse(413, 'too_large', `a report is at most ${MAX_REPORT_BYTES} bytes`);
    }
    const text = await c.req.text();
    const check = verifier.verify({
      method: 'POST',
      path,
      body: text,
      header: (name) => c.req.header(name),
    });
    if (!check.ok) return refuse(check.status, check.code, check.message, check.param);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return refuse(400, 'invalid_request', 'the report is not valid JSON', 'body');
    }
    const parsed = v.safeParse(DataPlaneReportSchema, body);
    if (!parsed.success) {
      const issue = parsed.issues[0];
      const field = issue.path?.map((p) => String(p.key)).join('.') ?? 'body';
      return refuse(
        400,
        'invalid_request',
        `invalid ${field}: expected ${issue.expected ?? issue.message}, received ${issue.received}`,
        field,
      );
    }
    ledger.record(parsed.output);
    return c.body(null, 204);
  });
  const now = options.ledger?.now ?? Date.now;
  const view = (): DataPlaneView => {
    const at = now();
    return {
      tableVersion: watch.version,
      subscribers: watch.subscribers,
      processes: ledger.list().map((p) => ({
        id: p.id,
        host: p.host,
        pid: p.pid,
        listen: p.listen,
        state: p.state,
        startedAt: p.startedAt,
        lastReportAt: p.lastReportAt,
        lastContactSeconds: Math.max(0, (at - p.lastReportAt) / 1000),
        tableVersion: p.tableVersion,
        subscribed: p.subscribed,
        inFlight: Object.values(p.inFlight).reduce((sum, n) => sum + n, 0),
        ejected: p.ejected,
        missedReports: p.missedReports,
        droppedRecords: p.droppedRecords,
      })),
    };
  };
  const queuedRequests = () => {
    const queued: Record<string, number> = {};
    for (const [deployment, n] of ledger.queuedByDeployment()) if (n > 0) queued[deployment] = n;
    return queued;
  };
  return { app, watch, ledger, view, queuedRequests, close: () => watch.close() };
}
