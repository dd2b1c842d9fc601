/**
 * The supervisor of one engine instance: its front (the only address others see, see
 * `engine-front.ts`), and its process: launch through the engine guard on a private Unix
 * socket (or a loopback port), probe it, check that what answers is its own process,
 * restart it after a crash with backoff, stop it. What to do when is decided by the pure
 * health machine (`health.ts`); this module only carries its actions out.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { signalGroup, terminateGroup } from '@es/proc';
import type { EngineLoad } from '@es/protocol';
import type { Clock } from './clock.js';
import { createEngineFront } from './engine-front.js';
import type { EngineEndpoint } from './engine-front.js';
import { answersHealth, describeEndpoint, readLoad } from './engine-probe.js';
import { spawnGuarded } from './engine-spawn.js';
import type { EngineAdapter, EngineSpec } from './engines.js';
import { initialHealth, nextHealth } from './health.js';
import type { HealthAction, HealthEvent, HealthPolicy, HealthState } from './health.js';
import { freePort } from './host.js';
import { socketOwnership } from './socket-owner.js';
import type { WorkerLogger } from './worker-options.js';

/** Options of {@link createEngineSupervisor}. */
export interface EngineSupervisorOptions {
  index: number;
  gpus: number[];
  /** The planned port of the front (kept when free). */
  port: number;
  /** Address the front binds and the worker registers. */
  host: string;
  /**
   * The worker's private directory (mode 0700) for the engines' Unix sockets; an engine
   * that cannot listen on one listens on a loopback port.
   */
  socketDir: string;
  /** Listen on `socketDir/engine-<index>.sock` (the adapter said the engine can). */
  unixSocket: boolean;
  /** The job's engine key: required by the front on every path, given to the engine. */
  key: string | undefined;
  /** The engine's log (stdout and stderr, appended). */
  logFile: string;
  adapter: EngineAdapter;
  /** The instance's engine spec without its endpoint, slice and key. */
  spec: Omit<EngineSpec, 'listen' | 'gpus' | 'apiKey'>;
  /** Environment of the engine (its command's own variables go on top). */
  env: NodeJS.ProcessEnv;
  policy: HealthPolicy;
  /** SIGTERM → SIGKILL of the engine's group on {@link EngineSupervisor.stop}. */
  killGraceMs: number;
  clock: Clock;
  logger: WorkerLogger;
  /** Tell the scheduler the instance's state now (it changed). */
  report(): Promise<void>;
  /** The engine guard script (default: the built `engine-guard.mjs`). */
  guardPath?: string;
}

/** One supervised engine instance; see {@link createEngineSupervisor}. */
export interface EngineSupervisor {
  readonly index: number;
  readonly gpus: readonly number[];
  readonly logFile: string;
  /** The address of the front. */
  readonly host: string;
  /** The port of the front (fixed once {@link listen} resolved; restarts keep it). */
  readonly port: number;
  readonly health: HealthState;
  /** The last load read from the engine's /metrics (cleared on every launch). */
  readonly load: EngineLoad | undefined;
  /** Pid of the engine's guard (its process group), while it runs. */
  readonly pid: number | undefined;
  /** Binds the front: a free port when `anyPort`, else the planned one unless it is taken. */
  listen(anyPort: boolean): Promise<void>;
  /** Starts the engine (through the guard) and its probes. */
  launch(): Promise<void>;
  /** Reads the load now (within `timeoutMs`); keeps the last one when it cannot be read. */
  refreshLoad(timeoutMs: number): Promise<EngineLoad | undefined>;
  /** Reads the load now, undefined when it cannot be read. */
  readLoad(timeoutMs?: number): Promise<EngineLoad | undefined>;
  /** Whether the engine that runs now has been ready (it may have requests in flight). */
  hasServed(): boolean;
  /** Inference requests its front passed to the engine and not yet answered in full. */
  inFlight(): number;
  /** Stop reacting: no more probes, restarts or exit handling (shutdown has begun). */
  halt(): void;
  /** The front refuses new inference requests from now on (see `EngineFront.drain`). */
  drain(): void;
  /**
   * SIGTERM the engine's group, SIGKILL after the grace; resolves once it exited (false if
   * none ran) and the front is closed.
   */
  stop(): Promise<boolean>;
  /** SIGKILL the engine's group now. */
  killSync(): void;
}

/** Creates the supervisor of one engine instance; nothing runs before `start`. */
export function createEngineSupervisor(options: EngineSupervisorOptions): EngineSupervisor {
  const { index, gpus, host, logFile, adapter, policy, clock, logger: log, key } = options;
  let health = initialHealth();
  /** Where the engine that runs now listens. */
  let endpoint: EngineEndpoint | undefined;
  const front = createEngineFront({ host, key, endpoint: () => endpoint });
  let load: EngineLoad | undefined;
  let current: ChildProcess | undefined;
  let halted = false;
  /** Engine timers (probes, restarts): cleared when the engine exits. */
  const timers = new Set<unknown>();

  const later = (ms: number, run: () => void) => {
    const timer = clock.setTimeout(() => {
      timers.delete(timer);
      run();
    }, ms);
    timers.add(timer);
  };
  const clearTimers = () => {
    for (const timer of timers) clock.clearTimeout(timer);
    timers.clear();
  };
  const loadNow = async (timeoutMs = 2_000) =>
    endpoint === undefined ? undefined : readLoad(endpoint, adapter.parseLoad, { key, timeoutMs });
  /** The launch whose socket was found to be someone else's (warned once per launch). */
  let warnedForeign: ChildProcess | undefined;

  /**
   * Whether what answered at `at` is `child`'s own socket: checked before every report of
   * readiness, so a port another user took first never becomes a ready worker.
   */
  const ownSocket = async (child: ChildProcess, at: EngineEndpoint): Promise<boolean> => {
    if (child.pid === undefined) return false;
    const owner = await socketOwnership(at, child.pid);
    if (owner === 'owned') return true;
    if (owner === 'unknown') {
      if (warnedForeign !== child) {
        warnedForeign = child;
        log.warn({ index }, 'cannot check who owns the engine socket here (no /proc): trusting it');
      }
      return true;
    }
    if (warnedForeign !== child) {
      warnedForeign = child;
      log.error(
        { index, endpoint: describeEndpoint(at) },
        `engine ${index}: ${describeEndpoint(at)} answers but is not the engine's socket (another user's process?): not ready`,
      );
    }
    return false;
  };

  const dispatch = (child: ChildProcess, event: HealthEvent) => {
    const step = nextHealth(policy, health, event);
    health = step.state;
    return perform(child, step.actions);
  };

  const perform = async (child: ChildProcess, actions: HealthAction[]) => {
    for (const action of actions) {
      switch (action.type) {
        case 'probe':
          later(action.afterMs, () => void probe(child, action.timeoutMs));
          break;
        case 'ready':
          log.info({ index, port: front.port }, `engine ${index} ready`);
          load = await loadNow();
          await options.report();
          break;
        case 'recovered':
          log.info({ index }, `engine ${index} answers again: ready`);
          void options.report();
          break;
        case 'unready':
          log.warn({ index, port: front.port }, health.reason ?? '');
          // Reported at once: the scheduler takes it out of routing now, not at a timeout.
          void options.report();
          break;
        case 'kill':
          if (child.pid === undefined) {
            later(50, () => void probe(child, policy.livenessTimeoutMs));
            break;
          }
          log.error(
            { index, pid: child.pid },
            `engine ${index} silent for ${Math.round(action.silentMs / 1000)} s: killing it to restart`,
          );
          signalGroup(child.pid, 'SIGKILL'); // The exit handler restarts it.
          break;
        case 'failed':
          log.error({ index, log: logFile }, health.reason ?? '');
          void options.report();
          break;
        case 'restart':
          log.warn({ index, log: logFile }, health.reason ?? '');
          // Reported at once, so the scheduler stops routing to the dead engine.
          void options.report();
          later(action.afterMs, relaunch);
          break;
      }
    }
  };

  const probe = async (child: ChildProcess, timeoutMs: number) => {
    const at = endpoint;
    if (halted || current !== child || at === undefined) return;
    let ok = await answersHealth(at, adapter.readinessPath, { key, timeoutMs });
    // Readiness (not yet serving, or serving again): only when the socket is the engine's.
    if (ok && health.phase !== 'ready') ok = await ownSocket(child, at);
    if (halted || current !== child) return;
    await dispatch(child, { type: 'probed', ok, at: clock.now() });
  };

  /** A fresh endpoint for a launch: the socket path (a stale file removed) or a free port. */
  const nextEndpoint = async (): Promise<EngineEndpoint> => {
    if (options.unixSocket) {
      const socketPath = join(options.socketDir, `engine-${index}.sock`);
      rmSync(socketPath, { force: true });
      return { socketPath };
    }
    return { host: '127.0.0.1', port: await freePort('127.0.0.1') };
  };

  const launch = async () => {
    const at = await nextEndpoint();
    if (halted) return;
    endpoint = at;
    const command = adapter.command({ ...options.spec, listen: at, gpus, apiKey: key });
    const child = spawnGuarded(command, {
      env: options.env,
      logFile,
      guardPath: options.guardPath,
    });
    current = child;
    load = undefined;
    log.info(
      { index, pid: child.pid, port: front.port, endpoint: describeEndpoint(at), gpus },
      `engine ${index} started: ${command.command} ${command.args.join(' ')}`,
    );
    let spawnError: Error | undefined;
    child.once('error', (error) => {
      spawnError = error;
    });
    child.once('close', (code, signal) => {
      if (current !== child) return;
      current = undefined;
      if (halted) return;
      clearTimers();
      void dispatch(child, {
        type: 'exited',
        at: clock.now(),
        code,
        signal,
        spawnError: spawnError?.message,
        logFile,
      });
    });
    void dispatch(child, { type: 'launched' });
  };

  const relaunch = () => {
    if (halted) return;
    // The front keeps its port: the scheduler routes to the same address as before.
    launch().catch((error: unknown) => {
      log.error({ index, error: String(error) }, `engine ${index} could not be restarted`);
    });
  };

  return {
    index,
    gpus,
    logFile,
    host,
    get port() {
      return front.port;
    },
    get health() {
      return health;
    },
    get load() {
      return load;
    },
    get pid() {
      return current?.pid;
    },
    async listen(anyPort) {
      const port = await front.listen(anyPort ? 0 : options.port);
      if (!anyPort && port !== options.port) {
        log.warn(
          { index, wanted: options.port, port },
          `port ${options.port} is taken; instance ${index} uses ${port}`,
        );
      }
    },
    launch,
    async refreshLoad(timeoutMs) {
      load = (await loadNow(timeoutMs)) ?? load;
      return load;
    },
    readLoad: (timeoutMs) => loadNow(timeoutMs),
    hasServed: () => health.readySince !== undefined && current !== undefined,
    inFlight: () => front.inFlight,
    drain: () => front.drain(),
    halt() {
      halted = true;
      clearTimers();
    },
    async stop() {
      const stopped = await stopEngine();
      await front.close();
      return stopped;
    },
    killSync() {
      signalGroup(current?.pid, 'SIGKILL');
    },
  };

  async function stopEngine(): Promise<boolean> {
    const child = current;
    if (!child || child.pid === undefined || child.exitCode !== null) return false;
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    // Children the engine left behind in its group go too (sweep).
    const termination = terminateGroup(child.pid, {
      graceMs: options.killGraceMs,
      exited,
      sweep: true,
      timers: clock,
    });
    await Promise.all([termination.done, exited]);
    return true;
  }
}
