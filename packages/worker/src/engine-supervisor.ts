/**
 * The supervisor of one engine instance's process: launch through the engine guard, probe
 * it, restart it after a crash with backoff, stop it. What to do when is decided by the
 * pure health machine (`health.ts`); this module only carries its actions out.
 */
import type { ChildProcess } from 'node:child_process';
import { signalGroup, terminateGroup } from '@es/proc';
import type { EngineLoad } from '@es/protocol';
import type { Clock } from './clock.js';
import { answersHealth, engineUrl, readLoad } from './engine-probe.js';
import { spawnGuarded } from './engine-spawn.js';
import type { EngineAdapter, EngineSpec } from './engines.js';
import { initialHealth, nextHealth } from './health.js';
import type { HealthAction, HealthEvent, HealthPolicy, HealthState } from './health.js';
import { freePort, isPortFree } from './host.js';
import type { WorkerLogger } from './worker-options.js';

/** Options of {@link createEngineSupervisor}. */
export interface EngineSupervisorOptions {
  index: number;
  gpus: number[];
  /** The planned port (kept when free). */
  port: number;
  /** Address the engine binds (and the probes reach). */
  host: string;
  /** The engine's log (stdout and stderr, appended). */
  logFile: string;
  adapter: EngineAdapter;
  /** The instance's engine spec without its port and slice. */
  spec: Omit<EngineSpec, 'port' | 'gpus'>;
  /** Environment of the engine (its command's own variables go on top). */
  env: NodeJS.ProcessEnv;
  policy: HealthPolicy;
  /** SIGTERM → SIGKILL of the engine's group on {@link EngineSupervisor.stop}. */
  killGraceMs: number;
  clock: Clock;
  logger: WorkerLogger;
  /** Tell the scheduler the instance's state now (it changed). */
  report(): Promise<void>;
  /** A restart moved the engine to another port: the scheduler must learn it. */
  portChanged(): void;
  /** The engine guard script (default: the built `engine-guard.mjs`). */
  guardPath?: string;
}

/** One supervised engine instance; see {@link createEngineSupervisor}. */
export interface EngineSupervisor {
  readonly index: number;
  readonly gpus: readonly number[];
  readonly logFile: string;
  /** The address the engine binds. */
  readonly host: string;
  /** The port the engine listens on (may change on a restart when it was taken). */
  readonly port: number;
  readonly health: HealthState;
  /** The last load read from the engine's /metrics (cleared on every launch). */
  readonly load: EngineLoad | undefined;
  /** Pid of the engine's guard (its process group), while it runs. */
  readonly pid: number | undefined;
  /** Picks the port: a free one when `anyPort`, else the planned one unless it is taken. */
  pickPort(anyPort: boolean): Promise<void>;
  /** Starts the engine (through the guard) and its probes. */
  launch(): void;
  /** Reads the load now (within `timeoutMs`); keeps the last one when it cannot be read. */
  refreshLoad(timeoutMs: number): Promise<EngineLoad | undefined>;
  /** Reads the load now, undefined when it cannot be read. */
  readLoad(timeoutMs?: number): Promise<EngineLoad | undefined>;
  /** Whether the engine that runs now has been ready (it may have requests in flight). */
  hasServed(): boolean;
  /** Stop reacting: no more probes, restarts or exit handling (shutdown has begun). */
  halt(): void;
  /** SIGTERM the engine's group, SIGKILL after the grace; resolves once it exited. False if none ran. */
  stop(): Promise<boolean>;
  /** SIGKILL the engine's group now. */
  killSync(): void;
}

/** Creates the supervisor of one engine instance; nothing runs before `start`. */
export function createEngineSupervisor(options: EngineSupervisorOptions): EngineSupervisor {
  const { index, gpus, host, logFile, adapter, policy, clock, logger: log } = options;
  let port = options.port;
  let health = initialHealth();
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
  const url = (path: string) => engineUrl(host, port, path);
  const loadNow = (timeoutMs = 2_000) => readLoad(url('/metrics'), adapter.parseLoad, timeoutMs);

  const choosePort = async (wanted: number) => {
    if (await isPortFree(wanted, host)) {
      port = wanted;
      return;
    }
    port = await freePort(host);
    log.warn({ index, wanted, port }, `port ${wanted} is taken; instance ${index} uses ${port}`);
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
          log.info({ index, port }, `engine ${index} ready`);
          load = await loadNow();
          await options.report();
          break;
        case 'recovered':
          log.info({ index }, `engine ${index} answers again: ready`);
          void options.report();
          break;
        case 'unready':
          log.warn({ index, port }, health.reason ?? '');
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
    if (halted || current !== child) return;
    const ok = await answersHealth(url(adapter.readinessPath), timeoutMs);
    if (halted || current !== child) return;
    await dispatch(child, { type: 'probed', ok, at: clock.now() });
  };

  const launch = () => {
    const command = adapter.command({ ...options.spec, port, gpus });
    const child = spawnGuarded(command, {
      env: options.env,
      logFile,
      guardPath: options.guardPath,
    });
    current = child;
    load = undefined;
    log.info(
      { index, pid: child.pid, port, gpus },
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
    const registeredPort = port;
    void choosePort(port).then(() => {
      if (halted) return;
      launch();
      // Another process took the port (on a shared host, another job's engine): tell the
      // scheduler where this instance listens now, or it routes to the wrong engine.
      if (port !== registeredPort) options.portChanged();
    });
  };

  return {
    index,
    gpus,
    logFile,
    host,
    get port() {
      return port;
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
    async pickPort(anyPort) {
      if (anyPort) port = await freePort(host);
      else await choosePort(port);
    },
    launch,
    async refreshLoad(timeoutMs) {
      load = (await loadNow(timeoutMs)) ?? load;
      return load;
    },
    readLoad: (timeoutMs) => loadNow(timeoutMs),
    hasServed: () => health.readySince !== undefined && current !== undefined,
    halt() {
      halted = true;
      clearTimers();
    },
    async stop() {
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
    },
    killSync() {
      signalGroup(current?.pid, 'SIGKILL');
    },
  };
}
