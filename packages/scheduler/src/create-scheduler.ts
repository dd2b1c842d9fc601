/**
 * Wiring: settings → provider, registry, reconciler, worker API, proxy and the seed's
 * status routes, all served on one port. No policy lives here.
 */
import { resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { Hono } from 'hono';
import { mountAdmin, type AdminApi } from '@es/admin';
import type { LocalProvider } from '@es/local';
import {
  createReconciler,
  createRegistry,
  createWorkerApi,
  type NodeProvider,
  type Reconciler,
  type Registry,
} from '@es/pool';
import {
  deriveEngineKey,
  deriveKeys,
  derivedSecrets,
  removeSchedulerUrl,
  schedulerUrlFilePath,
  workerUrlFilePath,
  writeSchedulerUrl,
} from '@es/protocol';
import { createProxyApp, reliabilityHooks, type ContinuationRecord } from '@es/proxy';
import {
  advertisedUrl,
  createBackendProvider,
  defaultWorkerCommand,
  resolveBackend,
} from './backend.js';
import { createDataPlaneRoutes, dataPlaneSettings } from './data-plane-routes.js';
import { logContinuation, logPoolEvent, logProgress } from './event-log.js';
import { startListeners } from './listeners.js';
import { toDeploymentConfig, workerRequest, type NodeRequestContext } from './node-request.js';
import { ensureLogDir, loadOrCreateSecret } from './secret.js';
import { controlUrlFilePath } from './data-plane-process.js';
import { superviseDataPlane, type SupervisedDataPlane } from './data-plane-supervisor.js';
import { createSeedRoutes } from './seed-routes.js';
import type { SchedulerSettings } from './settings.js';
import { summarizeStatus, type SeedStatusSummary } from './status-model.js';

/** A running scheduler. */
export interface Scheduler {
  /** The client URL (`/v1`): es-proxy's port, or this process's with `proxyProcesses` 0. */
  url: string;
  /** The client port. */
  port: number;
  /** The port of the scheduler's own app (admin, watch stream); `port` with `proxyProcesses` 0. */
  controlPort: number;
  backend: 'slurm' | 'local';
  registry: Registry;
  reconciler: Reconciler;
  provider: NodeProvider;
  /** The port of the worker listener (its own thread). */
  workerPort: number;
  /** Stop serving; cancel the jobs too when `cancelJobs` (default: the `cancelOnExit` setting). */
  close(options?: { cancelJobs?: boolean }): Promise<void>;
}

/** What the embedder of a scheduler provides (the `es-scheduler` binary, tests, examples). */
export interface SchedulerDeps {
  /** Where the scheduler logs (default: pino's JSON lines on stdout). */
  logger?: Logger;
  /** argv prefix that starts a worker (default: this Node and the checkout's apps/worker). */
  workerCommand?: string[];
  /** Called after `POST /api/v1/admin/stop` (`es stop`) has stopped the scheduler. */
  onStopped?: () => void;
  /**
   * Told every secret the scheduler holds (the shared secret and its derived tokens, the
   * client and admin keys) once it has read them, so the log stream can redact them.
   */
  onSecrets?: (secrets: readonly string[]) => void;
  /**
   * The node provider to submit jobs with, instead of the backend's (SLURM's, or local
   * processes). The embedder owns it: the scheduler does not close it.
   */
  provider?: NodeProvider;
}

const LOOPBACK = /^(127\.|localhost$|::1$|\[::1\]$)/;

/**
 * Start the scheduler described by `settings`: it listens, writes its URL files and keeps
 * the deployments' node jobs submitted until `close()`.
 * @example
 * const settings = resolveConfig({ backend: 'local', model: 'mock-model', port: 0 });
 * const scheduler = await createScheduler(settings, { logger: pino() });
 * // ... clients use `${scheduler.url}/v1`
 * await scheduler.close();
 */
export async function createScheduler(
  settings: SchedulerSettings,
  deps: SchedulerDeps = {},
): Promise<Scheduler> {
  const log = deps.logger ?? pino({ name: 'es-scheduler' });
  const backend = resolveBackend(settings.backend);
  // Owner-only (0700), or refused: other users must neither read the logs nor swap a
  // job script in it before sbatch reads it.
  const logDir = ensureLogDir(settings.logDir);
  const secretFile = resolve(settings.secretFile ?? `${logDir}/secret`);
  const secret = loadOrCreateSecret(secretFile);
  const keys = deriveKeys(secret);
  deps.onSecrets?.([
    ...derivedSecrets(secret),
    ...settings.apiKeys,
    ...(settings.adminKey === undefined ? [] : [settings.adminKey]),
  ]);

  const byName = new Map(settings.deployments.map((d) => [d.name, d]));
  const registry = createRegistry({
    deployments: settings.deployments.map((d) => toDeploymentConfig(d)),
    heartbeatIntervalMs: settings.healthCheckIntervalS * 1000,
    // Each job's engines take their own key: one that leaks opens that job only.
    upstreamKey: ({ jobId }) => deriveEngineKey(secret, jobId),
  });

  // Admin API, /metrics and /dashboard: mounted before any other route, attached below once
  // the reconciler exists.
  const app = new Hono();
  /** The ports this scheduler is reached on (its own, and es-proxy's client port), once it is. */
  let listeningPorts: number[] = [];
  const admin = mountAdmin(app, {
    events: registry,
    logDir,
    adminKey: settings.adminKey ?? keys.adminToken,
    // Signed admin requests must be signed for a port of ours (known once we listen): the
    // client port (es talks to it) or the control port (es-proxy forwards to it).
    ports: () => listeningPorts,
  });

  const baseProvider = deps.provider ?? createBackendProvider(backend, settings, logDir);
  const provider: NodeProvider = admin.instrumentProvider(baseProvider);

  const hooks = reliabilityHooks();
  if (hooks.planted.length > 0) {
    log.warn(`FAULTS PLANTED ON PURPOSE (ES_PLANT_FAULTS): ${hooks.planted.join(', ')}`);
  }
  /** A continuation of this process's proxy or of a data-plane process: metrics and the log. */
  const onContinuation = (record: ContinuationRecord) => {
    admin.onContinuation(record);
    logContinuation(log, registry, record);
  };
  const proxy = createProxyApp({
    pool: registry,
    apiKeys: settings.apiKeys,
    corsOrigins: settings.corsOrigins,
    exposeSelectedEndpoint: settings.exposeSelectedEndpoint,
    onRequestComplete: admin.onRequestComplete,
    continuation: {
      maxContinuations: settings.maxContinuations,
      stallTimeoutMs: settings.stallTimeoutS * 1000,
    },
    bodyBudgetBytes: settings.bodyBudgetMb * 1024 * 1024,
    clientIdleTimeoutMs: settings.clientIdleTimeoutS * 1000,
    queue: { coldStartTimeoutMs: settings.coldStartWaitS * 1000 },
    onContinuation,
    logger: { warn: (fields, message) => log.warn(fields, message) },
    ...(hooks.journal === undefined ? {} : { journal: hooks.journal }),
    ...(hooks.plantedFaults === undefined ? {} : { plantedFaults: hooks.plantedFaults }),
  });

  let summary: SeedStatusSummary = {
    jobCounts: { pending: 0, running: 0 },
    deploymentNotes: new Map(),
  };
  app.route(
    '/',
    createWorkerApi(registry, {
      workerKey: keys.workerKey,
      logger: log,
      // Signed for this port, as the workers sign for theirs: nothing relayed from another.
      audiences: () => listeningPorts.map(String),
    }),
  );
  app.route(
    '/',
    createSeedRoutes({
      registry,
      jobCounts: () => summary.jobCounts,
      deploymentNotes: () => summary.deploymentNotes,
      isAdmin: (request) => admin.isAdmin(request),
    }),
  );
  // The data plane's watch stream and reports; their records count in /metrics like ours.
  const dataPlaneRoutes = createDataPlaneRoutes({
    registry,
    dataPlaneKey: keys.dataPlaneKey,
    settings: dataPlaneSettings(settings),
    // Every process's continuations are logged as the in-process proxy's are (the
    // `continuation` events of the scheduler log, which the reliability checker reads).
    hooks: { onRequestComplete: admin.onRequestComplete, onContinuation },
  });
  app.route('/', dataPlaneRoutes.app);
  app.route('/', proxy);

  // The worker protocol is also mounted on the client port above, for tools that speak it
  // there; the workers are sent to the listener of its own.
  const { server, workerApi } = await startListeners(settings, registry, {
    workerKey: keys.workerKey,
    logger: log,
    fetch: app.fetch,
    handle: dataPlaneRoutes.watch.handle,
  });

  // The control URL es-proxy follows (the client port's own in the in-process layout).
  const controlUrlFile = controlUrlFilePath(logDir);
  const controlUrl = advertisedUrl(settings.host, server.port, backend);
  writeSchedulerUrl(controlUrlFile, controlUrl);
  let dataPlane: SupervisedDataPlane | undefined;
  if ((settings.proxyProcesses ?? 0) >= 1) {
    try {
      dataPlane = await superviseDataPlane({
        host: settings.host,
        port: settings.port,
        processes: settings.proxyProcesses ?? 1,
        logDir,
        secretFile,
        logger: log,
      });
    } catch (error) {
      await server.close(1_000);
      await workerApi.close();
      removeSchedulerUrl(controlUrlFile, controlUrl);
      throw error;
    }
  }
  const clientPort = dataPlane?.port ?? server.port;
  const clientServerUrl = `http://${settings.host}:${clientPort}`;
  listeningPorts = [...new Set([clientPort, server.port])];
  const ctx: NodeRequestContext = {
    schedulerUrl: advertisedUrl(settings.host, workerApi.port, backend),
    secretFile,
    logDir,
    workerCommand: deps.workerCommand ?? defaultWorkerCommand(),
    anyPort: backend === 'local',
  };
  // Workers re-read the worker-url file (ES_SCHEDULER_URL_FILE) when the scheduler is
  // unreachable, so a scheduler requeued to another node or restarted on another port finds
  // them again; the es CLI finds the client URL in scheduler-url.
  const workerUrlFile = workerUrlFilePath(logDir);
  writeSchedulerUrl(workerUrlFile, ctx.schedulerUrl);
  const urlFile = schedulerUrlFilePath(logDir);
  const clientUrl = advertisedUrl(settings.host, clientPort, backend);
  writeSchedulerUrl(urlFile, clientUrl);
  // Requests waiting here and in the es-proxy processes' queues (as their last reports say):
  // shown by the status views, and part of the load demand-aware scaling follows.
  const queuedRequests = (): Record<string, number> => {
    const depth = { ...proxy.queueDepth() };
    for (const [deployment, n] of Object.entries(dataPlaneRoutes.queuedRequests())) {
      depth[deployment] = (depth[deployment] ?? 0) + n;
    }
    return depth;
  };
  const reconciler = createReconciler({
    registry,
    queued: queuedRequests,
    provider,
    schedulerId: settings.schedulerId,
    intervalMs: settings.nodeAcquireIntervalS * 1000,
    heartbeatTimeoutMs: settings.heartbeatTimeoutS * 1000,
    // Heartbeats the worker listener's thread answered are applied before any is judged late.
    receivePendingHeartbeats: () => workerApi.receivePending(),
    startupTimeoutMs: settings.startupTimeoutS * 1000,
    releaseRequeued: settings.releaseRequeued,
    buildNodeRequest: (deployment) => {
      const d = byName.get(deployment.name);
      if (!d) throw new Error(`unknown deployment ${deployment.name}`);
      return workerRequest(d, ctx);
    },
    onError: (error, context) => {
      const e = error as { message?: string; command?: string; stderr?: string; kind?: string };
      log.warn(
        { ...context, kind: e.kind, command: e.command, stderr: e.stderr },
        `${context.action} failed: ${e.message ?? String(error)}`,
      );
    },
  });

  let close: (closeOptions?: { cancelJobs?: boolean }) => Promise<void> = async () => undefined;
  // The reconciler is the pool's operator (scale, drains) and the status's read model.
  const adminApi: AdminApi = admin.attach({
    operator: reconciler,
    readModel: reconciler,
    queueDepth: queuedRequests,
    dataPlane: () => dataPlaneRoutes.view(),
    stop: async ({ cancelJobs }) => {
      log.info(
        { cancelJobs },
        `stop requested through the admin API${cancelJobs ? ' (cancelling jobs)' : ''}`,
      );
      await close({ cancelJobs });
      deps.onStopped?.();
    },
  });
  // Progress while nodes come up: one line per job still on its way, every 10 s.
  const progressTimer = setInterval(() => logProgress(log, adminApi), 10_000);
  progressTimer.unref();

  const unsubscribe = registry.on((event) => logPoolEvent(log, event));
  const countTimer = setInterval(() => {
    summary = summarizeStatus(reconciler.status(), Date.now());
  }, 1000);
  countTimer.unref();

  reconciler.start();

  if (!LOOPBACK.test(settings.host) && settings.apiKeys.length === 0) {
    log.warn(
      `listening on ${settings.host}:${clientPort} with NO client API key: anyone who can reach this port can use the models. Pass --api-key-file (or ES_API_KEYS, or --api-key) to require one.`,
    );
  }
  log.info(
    {
      url: clientServerUrl,
      ...(dataPlane === undefined
        ? {}
        : { controlUrl: server.url, dataPlanePid: dataPlane.pid, adopted: dataPlane.adopted }),
      backend,
      workersReachUs: ctx.schedulerUrl,
      deployments: settings.deployments.map((d) => ({
        name: d.name,
        model: d.model,
        engine: d.engine,
        maxNodes: d.maxNodes,
        tp: d.tensorParallelSize,
      })),
    },
    dataPlane === undefined
      ? `serving /v1 on ${server.url} (backend ${backend}); workers report to ${ctx.schedulerUrl}`
      : `serving /v1 on ${clientServerUrl} (es-proxy pid ${dataPlane.pid}, ${dataPlane.processes} process${dataPlane.processes === 1 ? '' : 'es'}${dataPlane.adopted ? ', re-adopted' : ''}); control port ${server.port} (${server.url}, backend ${backend}); workers report to ${ctx.schedulerUrl}`,
  );
  log.info(
    `dashboard: ${clientServerUrl}/dashboard · status: es status --scheduler-url ${clientServerUrl} (admin key: --admin-key, or the token derived from ${secretFile}: es dashboard --secret-file ${secretFile})`,
  );

  let closed: Promise<void> | undefined;
  close = (closeOptions = {}) =>
    (closed ??= (async () => {
      clearInterval(countTimer);
      clearInterval(progressTimer);
      // No new es-proxy while closing: ended below with the jobs, or left serving.
      dataPlane?.release();
      dataPlaneRoutes.close();
      await reconciler.stop();
      if (closeOptions.cancelJobs ?? settings.cancelOnExit) {
        const cancelled = await reconciler.cancelAll();
        log.info({ cancelled }, `cancelled ${cancelled.length} job(s)`);
      }
      // The data plane follows the jobs: ended with them (the local backend's always are),
      // else left serving for the next scheduler, which re-adopts it.
      const endsJobs = (closeOptions.cancelJobs ?? settings.cancelOnExit) || backend === 'local';
      await Promise.all([server.close(5_000), endsJobs ? dataPlane?.stop() : undefined]);
      if (dataPlane !== undefined && !endsJobs) {
        log.info(
          `es-proxy (pid ${dataPlane.pid}) keeps serving ${clientServerUrl}/v1 from its last routing table; the next scheduler with --log-dir ${logDir} re-adopts it. To stop it: kill -TERM ${dataPlane.pid}`,
        );
      }
      await workerApi.close();
      await proxy.close();
      hooks.close();
      if (backend === 'local' && deps.provider === undefined) {
        await (baseProvider as LocalProvider).close({ kill: true });
      }
      unsubscribe();
      admin.close();
      // A stale URL would send workers and users to a scheduler that is gone (a newer
      // scheduler's URL stays).
      // The client URL stays while es-proxy serves it.
      if (dataPlane === undefined || endsJobs) removeSchedulerUrl(urlFile, clientUrl);
      removeSchedulerUrl(workerUrlFile, ctx.schedulerUrl);
      removeSchedulerUrl(controlUrlFile, controlUrl);
    })());
  return {
    url: clientServerUrl,
    port: clientPort,
    controlPort: server.port,
    workerPort: workerApi.port,
    backend,
    registry,
    reconciler,
    provider,
    close,
  };
}
