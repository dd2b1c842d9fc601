/**
 * Wiring: settings → provider, registry, reconciler, worker API, proxy and the seed's
 * status routes, all served on one port. No policy lives here.
 */
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';
import { mountAdmin, type AdminApi } from '@es/admin';
import type { Logger } from 'pino';
import { createLocalProvider, type LocalProvider } from '@es/local';
import {
  createReconciler,
  createRegistry,
  createWorkerApi,
  startWorkerApiThread,
  type NodeProvider,
  type WorkerApiThread,
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
import { createProxyApp, startProxyServer, type ProxyServer } from '@es/proxy';
import { createSlurmProvider } from '@es/slurm';
import type { SchedulerSettings } from './config.js';
import { toDeploymentConfig, workerRequest, type NodeRequestContext } from './node-request.js';
import { reliabilityHooks } from './reliability-hooks.js';
import { ensureLogDir, loadOrCreateSecret } from './secret.js';
import { createSeedRoutes, type DeploymentNote } from './seed-routes.js';

/** A running scheduler. */
export interface Scheduler {
  url: string;
  port: number;
  backend: 'slurm' | 'local';
  registry: Registry;
  reconciler: Reconciler;
  provider: NodeProvider;
  /** The port of the worker listener (its own thread). */
  workerPort: number;
  /** Stop serving; cancel the jobs too when `cancelJobs` (default: the `cancelOnExit` setting). */
  close(options?: { cancelJobs?: boolean }): Promise<void>;
}

export interface StartOptions {
  logger: Logger;
  /** argv prefix that starts a worker (default: this Node and apps/worker's dist/cli.mjs). */
  workerCommand?: string[];
  /** Called after `POST /api/v1/admin/stop` (`es stop`) has stopped the scheduler. */
  onStopped?: () => void;
  /**
   * Told every secret the scheduler holds (the shared secret and its derived tokens, the
   * client and admin keys) once it has read them, so the log stream can redact them.
   */
  onSecrets?: (secrets: readonly string[]) => void;
}

const LOOPBACK = /^(127\.|localhost$|::1$|\[::1\]$)/;

function hasSbatch(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v sbatch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function defaultWorkerCommand(): string[] {
  const cli = fileURLToPath(new URL('../../worker/dist/cli.mjs', import.meta.url));
  return [process.execPath, cli];
}

/** Whole seconds from now until `at` (ms), never negative. */
function secondsUntil(at: number): number {
  return Math.max(0, Math.round((at - Date.now()) / 1000));
}

/** URL the workers use to reach the scheduler. */
function advertisedUrl(host: string, port: number, backend: 'slurm' | 'local'): string {
  if (backend === 'local') return `http://127.0.0.1:${port}`;
  // A wildcard listen address is advertised as $ES_SCHEDULER_HOST, else the host name.
  const name =
    host === '0.0.0.0' || host === '::' ? process.env.ES_SCHEDULER_HOST || hostname() : host;
  return `http://${name.includes(':') ? `[${name}]` : name}:${port}`;
}

/**
 * Start the scheduler described by `settings`.
 * @example
 * const scheduler = await startScheduler(resolveConfig(await parseFlags(argv)), { logger });
 */
export async function startScheduler(
  settings: SchedulerSettings,
  options: StartOptions,
): Promise<Scheduler> {
  const log = options.logger;
  const backend =
    settings.backend === 'auto' ? (hasSbatch() ? 'slurm' : 'local') : settings.backend;
  // Owner-only (0700), or refused: other users must neither read the logs nor swap a
  // job script in it before sbatch reads it.
  const logDir = ensureLogDir(settings.logDir);
  const secretFile = resolve(settings.secretFile ?? `${logDir}/secret`);
  const secret = loadOrCreateSecret(secretFile);
  const keys = deriveKeys(secret);
  options.onSecrets?.([
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
  /** The port this scheduler listens on, once it does. */
  let listeningPort: number | undefined = undefined;
  const admin = mountAdmin(app, {
    events: registry,
    logDir,
    adminKey: settings.adminKey ?? keys.adminToken,
    // Signed admin requests must be signed for this port (known once it listens).
    ports: () => (listeningPort === undefined ? [] : [listeningPort]),
  });

  const gpusPerNode = Math.max(...settings.deployments.map((d) => d.gpusPerNode));
  const provider: NodeProvider = admin.instrumentProvider(
    backend === 'slurm'
      ? createSlurmProvider({})
      : // Local jobs end with the scheduler (a rehearsal should leave nothing behind), but the
        // state file lets a scheduler that crashed re-adopt the ones still running.
        createLocalProvider({
          nodes: settings.localNodes,
          gpusPerNode,
          killOnClose: true,
          stateFile: `${logDir}/local-jobs.json`,
          // SLURM's default KillWait. The workers' drain (grace, hand-over a margin before its
          // end, engine stop: at most 26 s with the notices) must run whole before the
          // SIGKILL; the provider's own default of 5 s cut it short, engines included.
          killGraceMs: 30_000,
        }),
  );

  const hooks = reliabilityHooks();
  if (hooks.planted.length > 0) {
    log.warn(`FAULTS PLANTED ON PURPOSE (ES_PLANT_FAULTS): ${hooks.planted.join(', ')}`);
  }
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
    onContinuation: (record) => {
      admin.onContinuation(record);
      const { requestId, fromWorker, toWorker, outcome, reason, generatedTokens } = record;
      const target = toWorker === undefined ? '' : ` on ${toWorker}`;
      const message = `generation ${requestId} cut on ${fromWorker} after ${generatedTokens} tokens (${record.cause}): ${outcome}${target} (${reason})`;
      registry.emit({
        type: 'continuation',
        deployment: record.deployment,
        workerId: fromWorker,
        reason: message,
      });
      const fields = { requestId, fromWorker, toWorker, outcome, reason, waitMs: record.waitMs };
      if (outcome === 'continued' || outcome === 'inexact') log.info(fields, message);
      else log.warn(fields, message);
    },
    logger: { warn: (fields, message) => log.warn(fields, message) },
    ...(hooks.journal === undefined ? {} : { journal: hooks.journal }),
    ...(hooks.plantedFaults === undefined ? {} : { plantedFaults: hooks.plantedFaults }),
  });

  let jobCounts = { pending: 0, running: 0 };
  let deploymentNotes = new Map<string, DeploymentNote>();
  app.route(
    '/',
    createWorkerApi(registry, {
      workerKey: keys.workerKey,
      logger: log,
      // Signed for this port, as the workers sign for theirs: nothing relayed from another.
      audiences: () => (listeningPort === undefined ? [] : [String(listeningPort)]),
    }),
  );
  app.route(
    '/',
    createSeedRoutes({
      registry,
      jobCounts: () => jobCounts,
      deploymentNotes: () => deploymentNotes,
      isAdmin: (request) => admin.isAdmin(request),
    }),
  );
  app.route('/', proxy);

  // The worker protocol on a listener and an event loop of its own: heartbeats are
  // answered in milliseconds while clients keep this thread busy. (Also mounted on the
  // client port above, for tools that speak it there; the workers are sent here.)
  let workerApi: WorkerApiThread;
  try {
    workerApi = await startWorkerApiThread(registry, {
      workerKey: keys.workerKey,
      host: settings.host,
      port: settings.workerPort,
      maxConnections: settings.maxConnections,
      logger: log,
      onError: (error) => log.error({ err: error }, `worker API thread failed: ${error.message}`),
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(
        `worker port ${settings.workerPort} on ${settings.host} is in use: is another scheduler running? Stop it or pass --worker-port (0: any free port)`,
        { cause: error },
      );
    }
    throw error;
  }
  let server: ProxyServer;
  try {
    server = await startProxyServer({
      fetch: app.fetch,
      port: settings.port,
      hostname: settings.host,
      maxConnections: settings.maxConnections,
    });
  } catch (error) {
    await workerApi.close();
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(
        `port ${settings.port} on ${settings.host} is in use: is another scheduler running? Stop it or pass --port`,
        { cause: error },
      );
    }
    throw error;
  }

  listeningPort = server.port;
  const ctx: NodeRequestContext = {
    schedulerUrl: advertisedUrl(settings.host, workerApi.port, backend),
    secretFile,
    logDir,
    workerCommand: options.workerCommand ?? defaultWorkerCommand(),
    anyPort: backend === 'local',
  };
  // Workers re-read the worker-url file (ES_SCHEDULER_URL_FILE) when the scheduler is
  // unreachable, so a scheduler requeued to another node or restarted on another port finds
  // them again; the es CLI finds the client URL in scheduler-url.
  const workerUrlFile = workerUrlFilePath(logDir);
  writeSchedulerUrl(workerUrlFile, ctx.schedulerUrl);
  const urlFile = schedulerUrlFilePath(logDir);
  const clientUrl = advertisedUrl(settings.host, server.port, backend);
  writeSchedulerUrl(urlFile, clientUrl);
  const reconciler = createReconciler({
    registry,
    provider,
    schedulerId: settings.schedulerId,
    intervalMs: settings.nodeAcquireIntervalS * 1000,
    heartbeatTimeoutMs: settings.heartbeatTimeoutS * 1000,
    // Heartbeats the worker listener's thread answered are applied before any is judged late.
    receivePendingHeartbeats: () => workerApi.receivePending(),
    startupTimeoutMs: settings.startupTimeoutS * 1000,
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
    queueDepth: () => proxy.queueDepth(),
    stop: async ({ cancelJobs }) => {
      log.info(
        { cancelJobs },
        `stop requested through the admin API${cancelJobs ? ' (cancelling jobs)' : ''}`,
      );
      await close({ cancelJobs });
      options.onStopped?.();
    },
  });
  // Progress while nodes come up: one line per job still on its way, every 10 s.
  const progressTimer = setInterval(() => {
    for (const d of adminApi.status().deployments) {
      for (const j of d.jobs) {
        if (j.endedAt !== undefined || j.progress.at(-1)?.phase === 'ready') continue;
        log.info(
          {
            event: 'progress',
            deployment: d.name,
            jobId: j.jobId,
            state: j.state,
            reason: j.reason,
          },
          `job ${j.jobId}: ${j.progressLine}`,
        );
      }
    }
  }, 10_000);
  progressTimer.unref();

  const unsubscribe = registry.on((event) => {
    const { type, ...fields } = event;
    log.info(
      { event: type, ...fields },
      `${type}${event.workerId ? ` ${event.workerId}` : event.jobId ? ` job ${event.jobId}` : ''}${event.reason ? `: ${event.reason}` : ''}`,
    );
  });
  const countTimer = setInterval(() => {
    let pending = 0;
    let running = 0;
    const notes = new Map<string, DeploymentNote>();
    for (const d of reconciler.status().deployments) {
      const note: DeploymentNote = {};
      if (d.permanentError) note.permanentError = d.permanentError;
      if (d.backoff) {
        note.backoff = `${d.backoff.kind} failure, retrying in ${secondsUntil(d.backoff.until)} s: ${d.backoff.message}`;
      }
      if (d.launchFailures) {
        const { count, lastJobId, message, until } = d.launchFailures;
        note.launchFailures = `${count} job(s) in a row ended before a worker was ready (last: job ${lastJobId}, ${message}); next replacement in ${secondsUntil(until)} s; its output: es logs ${lastJobId}`;
      }
      notes.set(d.name, note);
      for (const j of d.jobs) {
        if (j.state === 'PENDING' || j.state === 'CONFIGURING') pending += 1;
        else if (j.state === 'RUNNING') running += 1;
      }
    }
    jobCounts = { pending, running };
    deploymentNotes = notes;
  }, 1000);
  countTimer.unref();

  reconciler.start();

  if (!LOOPBACK.test(settings.host) && settings.apiKeys.length === 0) {
    log.warn(
      `listening on ${settings.host}:${server.port} with NO client API key: anyone who can reach this port can use the models. Pass --api-key-file (or ES_API_KEYS, or --api-key) to require one.`,
    );
  }
  log.info(
    {
      url: server.url,
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
    `serving /v1 on ${server.url} (backend ${backend}); workers report to ${ctx.schedulerUrl}`,
  );
  log.info(
    `dashboard: ${server.url}/dashboard · status: es status --scheduler-url ${server.url} (admin key: --admin-key, or the token derived from ${secretFile}: es dashboard --secret-file ${secretFile})`,
  );

  let closed: Promise<void> | undefined;
  close = (closeOptions = {}) =>
    (closed ??= (async () => {
      clearInterval(countTimer);
      clearInterval(progressTimer);
      await reconciler.stop();
      if (closeOptions.cancelJobs ?? settings.cancelOnExit) {
        const cancelled = await reconciler.cancelAll();
        log.info({ cancelled }, `cancelled ${cancelled.length} job(s)`);
      }
      await server.close(5_000);
      await workerApi.close();
      await proxy.close();
      hooks.close();
      if (backend === 'local') await (provider as LocalProvider).close({ kill: true });
      unsubscribe();
      admin.close();
      // A stale URL would send workers and users to a scheduler that is gone (a newer
      // scheduler's URL stays).
      removeSchedulerUrl(urlFile, clientUrl);
      removeSchedulerUrl(workerUrlFile, ctx.schedulerUrl);
    })());
  return {
    url: server.url,
    port: server.port,
    workerPort: workerApi.port,
    backend,
    registry,
    reconciler,
    provider,
    close,
  };
}
