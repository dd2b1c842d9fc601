import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ky from 'ky';
import type { KyInstance } from 'ky';
import { SlicePlanError, WORKER_API_PREFIX, deriveKeys, planSlices } from '@es/pool';
import type {
  EngineKind,
  EngineLoad,
  HeartbeatRequest,
  RegisterRequest,
  RegisterResponse,
  ReportedState,
} from '@es/pool';
import { engineAdapter } from './engines.js';
import type { EngineAdapter, EngineSpec } from './engines.js';
import { WorkerError } from './errors.js';
import { freePort, isHttpUrl, isPortFree, resolveAdvertiseHost } from './host.js';
import { splitArgs } from './split-args.js';

/** A pino-compatible logger (object first, message second); all methods optional in use. */
export interface WorkerLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Options of {@link createWorker}. */
export interface WorkerOptions {
  /** Scheduler base URL, e.g. `http://login1:8780`. */
  schedulerUrl: string;
  /**
   * A file whose first line is the scheduler's current URL (`<log dir>/scheduler-url`). While
   * the scheduler is unreachable the worker re-reads it (at most once a second) and follows a
   * new URL: a scheduler requeued to another node or restarted on another port finds its
   * workers again (they register anew with it).
   */
  schedulerUrlFile?: string;
  /** Deployment this worker serves. */
  deployment: string;
  engine: EngineKind;
  model: string;
  /** SLURM job id (or the local provider's). */
  jobId: string;
  /** `SLURM_RESTART_COUNT` (default 0). */
  restartCount?: number;
  /**
   * Port of instance 0; instance i gets `basePort + i` unless taken (default 8001).
   * 0 = every instance takes a free port (many workers on one machine, tests).
   */
  basePort?: number;
  /** GPUs per engine instance (default 1). */
  tensorParallelSize?: number;
  /** GPUs to use on this node (default: all of `visibleDevices`, else `tensorParallelSize`). */
  gpusPerNode?: number;
  /** `CUDA_VISIBLE_DEVICES` of the job (default: the worker's environment). */
  visibleDevices?: string;
  /** Default 0.9. */
  gpuMemoryUtilization?: number;
  maxModelLen?: number;
  servedModelName?: string;
  /** Extra engine arguments as one string (`--engine-extra-args`), split like a shell would. */
  engineExtraArgs?: string;
  /** Extra engine arguments, already split; appended after `engineExtraArgs`. */
  extraArgs?: readonly string[];
  /** Executable replacing the engine's default (for the mock: its script). */
  engineBin?: string;
  /** Contents of the shared secret file: worker token and engine `--api-key` derive from it. */
  secret?: string;
  /** Address to bind and register (default: see `resolveAdvertiseHost`). */
  host?: string;
  /** Directory of the per-instance engine logs (default `$TMPDIR/es-worker-<jobId>`). */
  logDir?: string;
  /** Node name reported to the scheduler (default `SLURMD_NODENAME`, else the hostname). */
  node?: string;
  /** Environment the engines inherit (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** After the drain notice, how long in-flight requests may finish before engines get SIGTERM (ms, default 15000). */
  drainGraceMs?: number;
  /** SIGTERM → SIGKILL of an engine's process group (ms, default 5000). */
  killGraceMs?: number;
  /** Readiness poll interval while an engine loads, and liveness poll once ready (ms, default 1000). */
  probeIntervalMs?: number;
  /**
   * A ready engine that fails this many liveness probes in a row (no answer within
   * `livenessTimeoutMs`, or not 2xx) is reported not ready (`loading`, with the reason) so
   * the scheduler stops routing to it; it is ready again at the first good probe (default 3).
   */
  livenessFailures?: number;
  /** Timeout of one liveness probe (ms, default 2000). */
  livenessTimeoutMs?: number;
  /** An engine unresponsive this long is killed and restarted like a crash (ms, default 60000). */
  hungRestartMs?: number;
  /** First restart delay after an engine exits (ms, default 1000), doubling per crash. */
  restartBackoffMs?: number;
  /** Cap of the restart delay (ms, default 30000). */
  maxRestartBackoffMs?: number;
  /** Consecutive crashes after which an instance is reported `failed` and left alone (default 5). */
  maxRestarts?: number;
  /** An engine that stayed ready this long has its crash count reset (ms, default 60000). */
  stableAfterMs?: number;
  /** Timeout of each scheduler request (ms, default 5000; drain notices use at most 2000). */
  requestTimeoutMs?: number;
  logger?: WorkerLogger;
}

/** What one engine instance is doing, as {@link Worker.instances} shows it. */
export interface InstanceStatus {
  index: number;
  gpus: number[];
  port: number;
  state: ReportedState | 'starting' | 'stopped';
  workerId: string | undefined;
  pid: number | undefined;
  logFile: string;
  crashes: number;
  load: EngineLoad | undefined;
}

/** How the worker ended. */
export interface WorkerExit {
  /** Process exit code: 0 after a drain/stop, 1 when fenced (409) or on a fatal error. */
  code: number;
  reason: string;
}

/** A running worker; see {@link createWorker}. */
export interface Worker {
  /** Plans slices, starts the engines and registers them; resolves once all are registered. */
  start(): Promise<void>;
  /** Drain notices first, then engines stopped, then deregistration. Idempotent. */
  stop(reason?: string): Promise<WorkerExit>;
  /** Resolves when the worker has stopped for any reason (stop, fencing, fatal error). */
  readonly done: Promise<WorkerExit>;
  /** Snapshot of every instance. */
  instances(): InstanceStatus[];
  /** Last-resort cleanup for `exit`/`uncaughtException` handlers: SIGKILL every engine group now. */
  killEnginesSync(): void;
}

interface Instance {
  index: number;
  gpus: number[];
  port: number;
  logFile: string;
  state: InstanceStatus['state'];
  workerId: string | undefined;
  heartbeatMs: number;
  child: ChildProcess | undefined;
  crashes: number;
  readySince: number | undefined;
  load: EngineLoad | undefined;
  reason: string | undefined;
  /** Engine timers (probes, restarts): cleared when the engine exits. */
  timers: Set<NodeJS.Timeout>;
  /** The heartbeat outlives engine restarts: the scheduler must keep hearing from us. */
  heartbeatTimer: NodeJS.Timeout | undefined;
  registering: Promise<void> | undefined;
}

const NOOP_LOGGER: WorkerLogger = { info() {}, warn() {}, error() {} };

/** The scheduler answered 409: this incarnation must exit. The message is the scheduler's. */
class Fenced extends Error {}

/** The `error.message` of an OpenAI-shaped error body, else the text itself (trimmed). */
function errorMessage(text: string): string {
  try {
    const message = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    if (typeof message === 'string' && message !== '') return message;
  } catch {
    // Not JSON: use the text.
  }
  return text.trim().slice(0, 500) || 'no reason given';
}

/**
 * Creates the worker daemon of one node: one engine instance per GPU slice, registered
 * with the scheduler, supervised, heartbeating, and drained on {@link Worker.stop}.
 * @example
 * const worker = createWorker({
 *   schedulerUrl: 'http://127.0.0.1:8780', deployment: 'default', engine: 'mock',
 *   model: 'mock-model', jobId: '42', tensorParallelSize: 4, gpusPerNode: 8,
 * });
 * await worker.start();
 * process.once('SIGTERM', () => void worker.stop('SIGTERM'));
 * process.exitCode = (await worker.done).code;
 */
export function createWorker(options: WorkerOptions): Worker {
  const log = options.logger ?? NOOP_LOGGER;
  const adapter: EngineAdapter = engineAdapter(options.engine);
  const restartCount = options.restartCount ?? 0;
  const env = options.env ?? process.env;
  const keys = options.secret === undefined ? undefined : deriveKeys(options.secret);
  const node = options.node ?? env.SLURMD_NODENAME ?? hostname();
  const drainGraceMs = options.drainGraceMs ?? 15_000;
  const killGraceMs = options.killGraceMs ?? 5_000;
  const probeIntervalMs = options.probeIntervalMs ?? 1_000;
  const livenessFailures = options.livenessFailures ?? 3;
  const livenessTimeoutMs = options.livenessTimeoutMs ?? 2_000;
  const hungRestartMs = options.hungRestartMs ?? 60_000;
  const backoffMs = options.restartBackoffMs ?? 1_000;
  const maxBackoffMs = options.maxRestartBackoffMs ?? 30_000;
  const maxRestarts = options.maxRestarts ?? 5;
  const stableAfterMs = options.stableAfterMs ?? 60_000;
  const timeoutMs = options.requestTimeoutMs ?? 5_000;
  const extraArgs = [
    ...(options.engineExtraArgs ? splitArgs(options.engineExtraArgs) : []),
    ...(options.extraArgs ?? []),
  ];
  const logDir = options.logDir ?? join(tmpdir(), `es-worker-${options.jobId}`);
  const apiFor = (schedulerUrl: string): KyInstance =>
    ky.create({
      prefixUrl: new URL(WORKER_API_PREFIX.slice(1), withSlash(schedulerUrl)).href,
      retry: 0,
      throwHttpErrors: false,
      timeout: timeoutMs,
      headers: keys ? { authorization: `Bearer ${keys.workerToken}` } : {},
    });
  let schedulerUrl = options.schedulerUrl;
  let api = apiFor(schedulerUrl);
  let urlFileReadAt = 0;
  /** The scheduler is unreachable: follow the URL file if it names another address. */
  const followUrlFile = async (): Promise<void> => {
    const file = options.schedulerUrlFile;
    if (file === undefined || Date.now() - urlFileReadAt < 1_000) return;
    urlFileReadAt = Date.now();
    let url: string;
    try {
      url = (await readFile(file, 'utf8')).split('\n')[0]?.trim() ?? '';
    } catch {
      return; // Not written (yet): the scheduler is not serving.
    }
    if (url === '' || url === schedulerUrl) return;
    if (!isHttpUrl(url)) {
      log.warn({ file, url }, `${file} names "${url}", not an http(s) URL; ignored`);
      return;
    }
    log.warn(
      { from: schedulerUrl, to: url, file },
      `the scheduler is unreachable at ${schedulerUrl} and ${file} names ${url}: following it`,
    );
    schedulerUrl = url;
    api = apiFor(url);
  };
  const instances: Instance[] = [];
  let host = '';
  let stopping: Promise<WorkerExit> | undefined;
  let resolveDone!: (exit: WorkerExit) => void;
  const done = new Promise<WorkerExit>((resolve) => {
    resolveDone = resolve;
  });

  const later = (instance: Instance, ms: number, run: () => void) => {
    const timer = setTimeout(() => {
      instance.timers.delete(timer);
      run();
    }, ms);
    instance.timers.add(timer);
  };
  const clearTimers = (instance: Instance) => {
    for (const timer of instance.timers) clearTimeout(timer);
    instance.timers.clear();
  };

  const spec = (instance: Instance): EngineSpec => ({
    engine: options.engine,
    model: options.model,
    host,
    port: instance.port,
    gpus: instance.gpus,
    tensorParallelSize: options.tensorParallelSize ?? 1,
    gpuMemoryUtilization: options.gpuMemoryUtilization ?? 0.9,
    maxModelLen: options.maxModelLen,
    servedModelName: options.servedModelName,
    apiKey: keys?.engineApiKey,
    extraArgs,
    engineBin: options.engineBin,
  });

  const launch = (instance: Instance) => {
    const command = adapter.command(spec(instance));
    const fd = openSync(instance.logFile, 'a');
    let child: ChildProcess;
    try {
      // Through the guard, which leads its own process group (detached) so stopping kills
      // the engine and all its children, and which stops the engine if this process dies
      // without a chance to do it (SIGKILL, OOM killer).
      child = spawn(
        process.execPath,
        [engineGuardPath(), String(process.pid), '--', command.command, ...command.args],
        { env: { ...env, ...command.env }, stdio: ['ignore', fd, fd], detached: true },
      );
    } finally {
      closeSync(fd);
    }
    instance.child = child;
    instance.state = 'loading';
    instance.readySince = undefined;
    instance.load = undefined;
    log.info(
      { index: instance.index, pid: child.pid, port: instance.port, gpus: instance.gpus },
      `engine ${instance.index} started: ${command.command} ${command.args.join(' ')}`,
    );
    let spawnError: Error | undefined;
    child.once('error', (error) => {
      spawnError = error;
    });
    child.once('close', (code, signal) => {
      if (instance.child !== child) return;
      instance.child = undefined;
      if (stopping) return;
      onEngineExit(instance, spawnError, code, signal);
    });
    later(instance, probeIntervalMs, () => void probe(instance, child));
  };

  const onEngineExit = (
    instance: Instance,
    spawnError: Error | undefined,
    code: number | null,
    signal: NodeJS.Signals | null,
  ) => {
    clearTimers(instance);
    const stable =
      instance.readySince !== undefined && Date.now() - instance.readySince >= stableAfterMs;
    instance.crashes = stable ? 1 : instance.crashes + 1;
    // The guard exits 127 when it cannot start the engine (the reason is in the engine log).
    const unstartable = spawnError !== undefined || code === GUARD_SPAWN_FAILED;
    const what = spawnError
      ? `could not start: ${spawnError.message}`
      : code === GUARD_SPAWN_FAILED
        ? `could not start (see ${instance.logFile})`
        : `exited (${signal ?? `code ${String(code)}`})`;
    // A missing executable will not appear by retrying.
    const give = unstartable || instance.crashes > maxRestarts;
    if (give) {
      instance.state = 'failed';
      instance.reason = `engine ${what}; not restarting after ${instance.crashes} failure(s)`;
      log.error({ index: instance.index, log: instance.logFile }, instance.reason);
      void heartbeat(instance);
      return;
    }
    const delay = Math.min(backoffMs * 2 ** (instance.crashes - 1), maxBackoffMs);
    instance.state = 'loading';
    instance.reason = `engine ${what}; restart ${instance.crashes}/${maxRestarts} in ${delay} ms`;
    log.warn({ index: instance.index, log: instance.logFile }, instance.reason);
    // Reported at once, so the scheduler stops routing to the dead engine.
    void heartbeat(instance);
    later(instance, delay, () => {
      if (stopping) return;
      const registeredPort = instance.port;
      void choosePort(instance, instance.port).then(async () => {
        if (stopping) return;
        launch(instance);
        // Another process took the port (on a shared host, another job's engine): tell the
        // scheduler where this instance listens now, or it routes to the wrong engine.
        if (instance.port !== registeredPort && instance.workerId !== undefined) {
          try {
            await register(instance);
          } catch (error) {
            fatal(error);
          }
        }
      });
    });
  };

  const engineUrl = (instance: Instance, path: string) =>
    `http://${host.includes(':') ? `[${host}]` : host}:${instance.port}${path}`;

  /** Whether the engine answers its readiness path with a 2xx within `timeoutMs`. */
  const answersHealth = async (instance: Instance, timeoutMs: number): Promise<boolean> => {
    try {
      const response = await fetch(engineUrl(instance, adapter.readinessPath), {
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  };

  const probe = async (instance: Instance, child: ChildProcess) => {
    if (stopping || instance.child !== child || instance.state !== 'loading') return;
    const ok = await answersHealth(instance, Math.max(probeIntervalMs, 1000));
    if (stopping || instance.child !== child) return;
    if (!ok) {
      later(instance, probeIntervalMs, () => void probe(instance, child));
      return;
    }
    instance.state = 'ready';
    instance.readySince = Date.now();
    instance.reason = undefined;
    log.info({ index: instance.index, port: instance.port }, `engine ${instance.index} ready`);
    instance.load = await readLoad(instance);
    await heartbeat(instance);
    later(instance, probeIntervalMs, () => void liveness(instance, child, 0, undefined));
  };

  /**
   * Once ready, the engine keeps being probed: a hung engine (it accepts connections, never
   * answers) leaves routing after `livenessFailures` probes, comes back at the first good
   * one, and is killed (then restarted as after a crash) once silent for `hungRestartMs`.
   */
  const liveness = async (
    instance: Instance,
    child: ChildProcess,
    failures: number,
    silentSince: number | undefined,
  ): Promise<void> => {
    if (stopping || instance.child !== child) return;
    const ok = await answersHealth(instance, livenessTimeoutMs);
    if (stopping || instance.child !== child) return;
    // After a failed probe the next one follows at once: a hang shows within 3 timeouts.
    const next = (f: number, since: number | undefined) =>
      later(
        instance,
        f === 0 ? probeIntervalMs : 50,
        () => void liveness(instance, child, f, since),
      );
    if (ok) {
      if (instance.state !== 'ready') {
        instance.state = 'ready';
        instance.reason = undefined;
        log.info({ index: instance.index }, `engine ${instance.index} answers again: ready`);
        void heartbeat(instance);
      }
      next(0, undefined);
      return;
    }
    const count = failures + 1;
    const since = silentSince ?? Date.now();
    if (count === livenessFailures) {
      instance.state = 'loading';
      instance.reason = `engine not answering ${adapter.readinessPath} (${count} probes in a row)`;
      log.warn({ index: instance.index, port: instance.port }, instance.reason);
      // Reported at once: the scheduler takes it out of routing now, not at a timeout.
      void heartbeat(instance);
    }
    if (Date.now() - since >= hungRestartMs && child.pid !== undefined) {
      log.error(
        { index: instance.index, pid: child.pid },
        `engine ${instance.index} silent for ${Math.round((Date.now() - since) / 1000)} s: killing it to restart`,
      );
      killGroup(child.pid, 'SIGKILL');
      return; // The exit handler restarts it.
    }
    next(count, since);
  };

  const readLoad = async (
    instance: Instance,
    timeoutMs = 2_000,
  ): Promise<EngineLoad | undefined> => {
    try {
      const response = await fetch(engineUrl(instance, '/metrics'), {
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!response.ok) {
        await response.body?.cancel();
        return undefined;
      }
      return adapter.parseLoad(await response.text());
    } catch {
      return undefined;
    }
  };

  const register = async (instance: Instance): Promise<void> => {
    const body: RegisterRequest = {
      deployment: options.deployment,
      jobId: options.jobId,
      restartCount,
      index: instance.index,
      host,
      port: instance.port,
      gpus: instance.gpus,
      engine: options.engine,
      model: options.model,
      node,
      state: instance.state === 'ready' || instance.state === 'failed' ? instance.state : 'loading',
      logFile: instance.logFile,
      pid: process.pid,
    };
    for (let attempt = 1; !stopping; attempt++) {
      let status: number;
      let text: string;
      try {
        const response = await api.post('register', { json: body });
        status = response.status;
        text = await response.text();
      } catch (error) {
        log.warn({ attempt, error: String(error) }, 'scheduler unreachable; retrying registration');
        await followUrlFile();
        await sleep(Math.min(500 * attempt, 5000));
        continue;
      }
      if (status === 200) {
        const registered = JSON.parse(text) as RegisterResponse;
        instance.workerId = registered.workerId;
        instance.heartbeatMs = registered.heartbeatIntervalMs;
        log.info({ workerId: registered.workerId }, `instance ${instance.index} registered`);
        return;
      }
      if (status === 409) throw new Fenced(errorMessage(text));
      if (status === 401 || status === 403 || status === 400 || status === 422) {
        throw new WorkerError(
          'REGISTRATION_FAILED',
          `The scheduler refused to register instance ${instance.index} (HTTP ${status}): ${text}` +
            (status === 401 ? " — check that --secret-file is the scheduler's secret" : ''),
        );
      }
      log.warn({ status, attempt }, `registration answered ${status}; retrying`);
      await sleep(Math.min(500 * attempt, 5000));
    }
  };

  const heartbeat = async (instance: Instance): Promise<void> => {
    if (stopping || instance.workerId === undefined) return;
    // A slow or hung engine must not delay the heartbeat into the scheduler's timeout.
    if (instance.state === 'ready') {
      const budget = Math.min(2_000, Math.max(200, instance.heartbeatMs / 2));
      instance.load = (await readLoad(instance, budget)) ?? instance.load;
    }
    // Stopped while reading the load: after a drain notice no heartbeat may say "ready".
    if (stopping) return;
    const state: ReportedState =
      instance.state === 'ready' || instance.state === 'failed' ? instance.state : 'loading';
    const body: HeartbeatRequest = {
      state,
      restartCount,
      ...(state === 'ready' && instance.load ? { load: instance.load } : {}),
      ...(instance.reason ? { reason: instance.reason } : {}),
    };
    try {
      const response = await api.post(`${encodeURIComponent(instance.workerId)}/heartbeat`, {
        json: body,
      });
      const answer = response.status === 409 ? await response.text() : '';
      if (response.status !== 409) await response.body?.cancel();
      if (response.status === 404 && !stopping) {
        log.warn(
          { workerId: instance.workerId },
          'scheduler forgot this instance; registering again',
        );
        await register(instance);
      } else if (response.status === 409) {
        throw new Fenced(errorMessage(answer));
      }
    } catch (error) {
      if (error instanceof Fenced || error instanceof WorkerError) {
        fatal(error);
        return;
      }
      log.warn({ error: String(error) }, 'heartbeat failed');
      await followUrlFile();
    }
  };

  const heartbeatLoop = (instance: Instance) => {
    instance.heartbeatTimer = setTimeout(() => {
      instance.heartbeatTimer = undefined;
      if (stopping) return;
      void heartbeat(instance).then(() => {
        if (!stopping) heartbeatLoop(instance);
      });
    }, instance.heartbeatMs);
  };

  const fatal = (error: unknown) => {
    if (stopping) return;
    const fenced = error instanceof Fenced;
    const reason = fenced
      ? `fenced by the scheduler: ${(error as Fenced).message}`
      : String(error instanceof Error ? error.message : error);
    log.error({}, `worker stopping: ${reason}`);
    void shutdown(reason, { drain: false, code: 1 });
  };

  const choosePort = async (instance: Instance, wanted: number) => {
    if (await isPortFree(wanted, host)) {
      instance.port = wanted;
      return;
    }
    instance.port = await freePort(host);
    log.warn(
      { index: instance.index, wanted, port: instance.port },
      `port ${wanted} is taken; instance ${instance.index} uses ${instance.port}`,
    );
  };

  const stopEngines = async () => {
    await Promise.all(
      instances.map(async (instance) => {
        const child = instance.child;
        if (!child || child.pid === undefined || child.exitCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
        killGroup(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
        }, killGraceMs);
        await exited;
        clearTimeout(timer);
        // Children the engine left behind in its group go too.
        if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
        instance.state = 'stopped';
      }),
    );
  };

  const waitIdle = async () => {
    const deadline = Date.now() + drainGraceMs;
    // Every engine that has served (ready, now draining) and is still running: one whose
    // /metrics cannot be read is busy too (it may be finishing streams while shutting down
    // its listener on the step's SIGTERM); only its exit or the grace ends the wait.
    const busy = async () => {
      const loads = await Promise.all(
        instances
          .filter((instance) => instance.readySince !== undefined && instance.child)
          .map((instance) => readLoad(instance)),
      );
      return loads.some((load) => load === undefined || load.running + load.waiting > 0);
    };
    while (Date.now() < deadline && (await busy())) await sleep(250);
  };

  const shutdown = (reason: string, how: { drain: boolean; code: number }): Promise<WorkerExit> => {
    if (stopping) return stopping;
    stopping = (async () => {
      for (const instance of instances) {
        clearTimers(instance);
        clearTimeout(instance.heartbeatTimer);
      }
      const registered = instances.filter((instance) => instance.workerId !== undefined);
      if (how.drain) {
        // The drain notice goes out before anything else so the scheduler stops routing now.
        await Promise.all(
          registered.map((instance) =>
            api
              .post(`${encodeURIComponent(instance.workerId ?? '')}/drain`, {
                json: { reason },
                timeout: Math.min(timeoutMs, 2000),
              })
              .then((response) => response.body?.cancel())
              .catch((error: unknown) => log.warn({ error: String(error) }, 'drain notice failed')),
          ),
        );
        for (const instance of registered) instance.state = 'draining';
        log.info({ reason }, 'drain notices sent; waiting for in-flight requests');
        await waitIdle();
      }
      await stopEngines();
      if (how.drain) {
        await Promise.all(
          registered.map((instance) =>
            api
              .post(`${encodeURIComponent(instance.workerId ?? '')}/deregister`, {
                json: { reason },
                timeout: Math.min(timeoutMs, 2000),
              })
              .then((response) => response.body?.cancel())
              .catch((error: unknown) => log.warn({ error: String(error) }, 'deregister failed')),
          ),
        );
      }
      const exit = { code: how.code, reason };
      log.info(exit, 'worker stopped');
      resolveDone(exit);
      return exit;
    })();
    return stopping;
  };

  return {
    done,
    async start() {
      let plan;
      try {
        plan = planSlices({
          visibleDevices: options.visibleDevices ?? env.CUDA_VISIBLE_DEVICES,
          gpuCount: options.gpusPerNode,
          tensorParallelSize: options.tensorParallelSize ?? 1,
          // Any valid base for planning when ports are chosen freely (0).
          basePort: options.basePort || (options.basePort === 0 ? 1 : 8001),
        });
      } catch (error) {
        if (error instanceof SlicePlanError) {
          throw new WorkerError('INVALID_OPTION', error.message, {
            field: kebab(error.field),
            cause: error,
          });
        }
        throw error;
      }
      host = await resolveAdvertiseHost({ host: options.host, schedulerUrl: options.schedulerUrl });
      mkdirSync(logDir, { recursive: true });
      for (const slice of plan) {
        instances.push({
          index: slice.index,
          gpus: slice.gpus,
          port: slice.port,
          logFile: join(logDir, `engine-${options.jobId}.${restartCount}.${slice.index}.log`),
          state: 'starting',
          workerId: undefined,
          heartbeatMs: 5000,
          child: undefined,
          crashes: 0,
          readySince: undefined,
          load: undefined,
          reason: undefined,
          timers: new Set(),
          heartbeatTimer: undefined,
          registering: undefined,
        });
      }
      try {
        for (const instance of instances) {
          if (options.basePort === 0) instance.port = await freePort(host);
          else await choosePort(instance, instance.port);
          if (stopping) return;
          launch(instance);
        }
        await Promise.all(
          instances.map(async (instance) => {
            await register(instance);
            if (!stopping) heartbeatLoop(instance);
          }),
        );
      } catch (error) {
        if (error instanceof Fenced) {
          fatal(error);
          return;
        }
        await shutdown(error instanceof Error ? error.message : String(error), {
          drain: false,
          code: 1,
        });
        throw error;
      }
    },
    stop: (reason = 'stopped') => shutdown(reason, { drain: true, code: 0 }),
    instances: () =>
      instances.map((instance) => ({
        index: instance.index,
        gpus: [...instance.gpus],
        port: instance.port,
        state: instance.state,
        workerId: instance.workerId,
        pid: instance.child?.pid,
        logFile: instance.logFile,
        crashes: instance.crashes,
        load: instance.load,
      })),
    killEnginesSync() {
      for (const instance of instances) {
        const pid = instance.child?.pid;
        if (pid !== undefined) killGroup(pid, 'SIGKILL');
      }
    },
  };
}

/** Exit code of the engine guard when the engine could not be started at all. */
const GUARD_SPAWN_FAILED = 127;

/**
 * Path of the engine guard script: next to the built module (dist/index.mjs), or, when
 * this module runs from source (tests), the built one in ../dist.
 */
function engineGuardPath(): string {
  const beside = fileURLToPath(new URL('./engine-guard.mjs', import.meta.url));
  if (existsSync(beside)) return beside;
  const built = fileURLToPath(new URL('../dist/engine-guard.mjs', import.meta.url));
  if (existsSync(built)) return built;
  throw new WorkerError(
    'ENGINE_GUARD_MISSING',
    `engine guard not found at ${beside} (build @es/worker)`,
  );
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}

function kebab(field: string): string {
  const names: Record<string, string> = {
    tensorParallelSize: 'tensor-parallel-size',
    gpuCount: 'gpus-per-node',
    visibleDevices: 'CUDA_VISIBLE_DEVICES',
    basePort: 'base-port',
  };
  return names[field] ?? field;
}

/**
 * Runs a worker as a process's main job: starts it, drains on SIGTERM/SIGINT (the drain
 * notice first), kills engine groups on any other way out, and resolves the exit code
 * (0 after a drain, 1 when fenced or on a fatal error).
 * @example
 * process.exitCode = await runWorker({ schedulerUrl, deployment, engine: 'vllm', model, jobId });
 */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const worker = createWorker(options);
  const onSignal = (signal: NodeJS.Signals) => {
    options.logger?.info({ signal }, `${signal} received: draining`);
    void worker.stop(signal);
  };
  const onExit = () => worker.killEnginesSync();
  const onCrash = (error: unknown) => {
    options.logger?.error({ error: String(error) }, 'uncaught error: killing engines');
    worker.killEnginesSync();
    process.exit(1);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('exit', onExit);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  try {
    await worker.start();
    return (await worker.done).code;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    worker.killEnginesSync();
    process.off('exit', onExit);
  }
}
