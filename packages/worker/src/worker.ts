/**
 * The worker's orchestrator: plans the GPU slices, starts one engine supervisor per slice,
 * links each to the scheduler, and shuts everything down in order (drain notices, wait
 * for in-flight requests, stop engines, deregister). The parts: `engine-supervisor.ts`
 * (processes), `health.ts` (pure health state machine), `scheduler-link.ts` (protocol).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SlicePlanError, planNodeSlices } from '@es/pool';
import type { SlicePlan } from '@es/pool';
import { defaultHandoverMargin, deriveEngineKey, deriveKeys } from '@es/protocol';
import { sleep, systemClock } from './clock.js';
import { createEngineSupervisor } from './engine-supervisor.js';
import type { EngineSupervisor } from './engine-supervisor.js';
import { readEngineVersion } from './engine-probe.js';
import { engineAdapter } from './engines.js';
import { WorkerError } from './errors.js';
import { healthPolicy, reportedState } from './health.js';
import { resolveAdvertiseHost } from './host.js';
import { FencedError, createSchedulerLink } from './scheduler-link.js';
import { splitArgs } from './split-args.js';
import type {
  InstanceStatus,
  Worker,
  WorkerExit,
  WorkerLogger,
  WorkerOptions,
} from './worker-options.js';

const NOOP_LOGGER: WorkerLogger = { info() {}, warn() {}, error() {} };
/** Longest wait for `vllm --version` (it imports vLLM: seconds, more on a cold file system). */
const VERSION_TIMEOUT_MS = 120_000;

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
  const clock = options.clock ?? systemClock;
  const adapter = engineAdapter(options.engine);
  const restartCount = options.restartCount ?? 0;
  const env = options.env ?? process.env;
  const keys = options.secret === undefined ? undefined : deriveKeys(options.secret);
  // This job's engines' key: one leaked key opens this job only.
  const engineKey =
    options.secret === undefined ? undefined : deriveEngineKey(options.secret, options.jobId);
  const drainGraceMs = options.drainGraceMs ?? 15_000;
  const handoverMarginMs =
    options.handoverMarginMs ?? defaultHandoverMargin(drainGraceMs / 1000) * 1000;
  if (!(handoverMarginMs >= 0) || !(handoverMarginMs < drainGraceMs || handoverMarginMs === 0)) {
    throw new WorkerError(
      'invalid_option',
      `handoverMarginMs (${handoverMarginMs}) must be >= 0 and shorter than drainGraceMs (${drainGraceMs}): ` +
        `pass e.g. handoverMarginMs ${defaultHandoverMargin(drainGraceMs / 1000) * 1000}`,
      { param: 'handover-margin' },
    );
  }
  const policy = healthPolicy(options, adapter.readinessPath);
  const extraArgs = [
    ...(options.engineExtraArgs ? splitArgs(options.engineExtraArgs) : []),
    ...(options.extraArgs ?? []),
  ];
  /** The log directory: `logDir`, else a fresh private one (never a predictable path). */
  let logDir = options.logDir;
  /** Private (0700) directory of the engines' Unix sockets, removed at the end. */
  let socketDir: string | undefined;
  const link = createSchedulerLink({
    schedulerUrl: options.schedulerUrl,
    schedulerUrlFile: options.schedulerUrlFile,
    workerKey: keys?.workerKey,
    requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
    identity: {
      deployment: options.deployment,
      jobId: options.jobId,
      restartCount,
      engine: options.engine,
      model: options.model,
      node: options.node ?? env.SLURMD_NODENAME ?? hostname(),
    },
    clock,
    logger: log,
    onFatal: (error) => fatal(error),
  });
  const engines: EngineSupervisor[] = [];
  /** Shutdown's own states, shown by `instances()` over the engines' health. */
  const ended = new Map<number, 'draining' | 'stopped'>();
  let stopping: Promise<WorkerExit> | undefined;
  let resolveDone!: (exit: WorkerExit) => void;
  const done = new Promise<WorkerExit>((resolve) => {
    resolveDone = resolve;
  });

  /** The engine's version, once per worker, when its command line depends on it (vLLM). */
  const probeVersion = async (): Promise<string | undefined> => {
    const command = adapter.versionCommand?.({ engineBin: options.engineBin, extraArgs });
    if (command === undefined) return undefined;
    const probe = await readEngineVersion(command, env, VERSION_TIMEOUT_MS);
    if ('version' in probe) {
      log.info({ engine: options.engine, version: probe.version }, 'engine version');
      return probe.version;
    }
    log.warn(
      { engine: options.engine, problem: probe.problem },
      'engine version unknown: starting it as the current version (no --disable-log-requests)',
    );
    return undefined;
  };

  const supervise = (
    slice: { index: number; gpus: number[]; port: number },
    dirs: { host: string; logDir: string; socketDir: string },
    engineVersion: string | undefined,
  ) => {
    const engine: EngineSupervisor = createEngineSupervisor({
      ...slice,
      host: dirs.host,
      socketDir: dirs.socketDir,
      unixSocket: adapter.unixSocket(engineVersion),
      key: engineKey,
      logFile: join(dirs.logDir, `engine-${options.jobId}.${restartCount}.${slice.index}.log`),
      adapter,
      spec: {
        engine: options.engine,
        model: options.model,
        tensorParallelSize: options.tensorParallelSize ?? 1,
        gpuMemoryUtilization: options.gpuMemoryUtilization ?? 0.9,
        maxModelLen: options.maxModelLen,
        servedModelName: options.servedModelName,
        extraArgs,
        engineBin: options.engineBin,
        trustRemoteCode: options.trustRemoteCode,
        engineVersion,
      },
      env,
      policy,
      killGraceMs: options.killGraceMs ?? 5_000,
      clock,
      logger: log,
      report: () => link.heartbeat(engine),
    });
    return engine;
  };

  const fatal = (error: unknown) => {
    if (stopping) return;
    const reason =
      error instanceof FencedError
        ? `fenced by the scheduler: ${error.message}`
        : String(error instanceof Error ? error.message : error);
    log.error({}, `worker stopping: ${reason}`);
    void shutdown(reason, { drain: false, code: 1 });
  };

  // Every engine that has served (ready, now draining) and is still running: one whose
  // /metrics cannot be read is busy too (it may be finishing streams while shutting down
  // its listener on the step's SIGTERM); only its exit or the grace ends the wait. An
  // answer still passing through a front counts whatever the engine's metrics say.
  const busy = async () => {
    if (engines.some((engine) => engine.hasServed() && engine.inFlight() > 0)) return true;
    const loads = await Promise.all(
      engines.filter((engine) => engine.hasServed()).map((engine) => engine.readLoad()),
    );
    return loads.some((load) => load === undefined || load.running + load.waiting > 0);
  };

  /** Polls every 250 ms of clock time: true once no engine is busy, false at `until`. */
  const idleBy = async (until: number): Promise<boolean> => {
    for (;;) {
      if (!(await busy())) return true;
      const left = until - clock.now();
      if (left <= 0) return false;
      await sleep(clock, Math.min(250, left));
    }
  };

  /**
   * The drain grace: wait for idle engines; engines still busy `handoverMarginMs` before
   * its end are handed over (their generations continue on other workers), then the rest
   * of the grace lets the aborted streams end before the engines get SIGTERM.
   */
  const waitIdle = async (reason: string, workerIds: readonly string[]) => {
    const deadline = clock.now() + drainGraceMs;
    // With no grace at all, busy engines are handed over at once, just before they stop.
    const idle = drainGraceMs > 0 ? await idleBy(deadline - handoverMarginMs) : !(await busy());
    if (idle) return;
    const stopInMs = Math.max(0, deadline - clock.now());
    log.warn(
      { workerIds, stopInMs },
      'engines still busy near the end of the drain grace: handing their generations over',
    );
    await link.handover(workerIds, reason, stopInMs, Math.max(250, stopInMs));
    if (deadline > clock.now()) await idleBy(deadline);
  };

  const shutdown = (reason: string, how: { drain: boolean; code: number }): Promise<WorkerExit> => {
    if (stopping) return stopping;
    stopping = (async () => {
      for (const engine of engines) engine.halt();
      // Every front refuses new requests itself at once: a drain takes effect in every
      // data-plane process even while the scheduler cannot be told (or is down).
      for (const engine of engines) engine.drain();
      link.halt();
      const registered = engines.filter((engine) => link.workerId(engine.index) !== undefined);
      const workerIds = () => registered.map((engine) => link.workerId(engine.index) ?? '');
      if (how.drain) {
        // The drain notice goes out before anything else so the scheduler stops routing now.
        await link.drain(workerIds(), reason);
        for (const engine of registered) ended.set(engine.index, 'draining');
        log.info({ reason }, 'drain notices sent; waiting for in-flight requests');
      }
      // Alive until the engines are stopped: heartbeats say `draining` meanwhile.
      const stopBeats = how.drain ? link.keepDraining(workerIds(), reason) : () => undefined;
      if (how.drain) await waitIdle(reason, workerIds());
      await Promise.all(
        engines.map(async (engine) => {
          if (await engine.stop()) ended.set(engine.index, 'stopped');
        }),
      );
      stopBeats();
      if (socketDir !== undefined) rmSync(socketDir, { recursive: true, force: true });
      if (how.drain) await link.deregister(workerIds(), reason);
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
        // The GPUs SLURM gave this job; --gpus-per-node only when the job says nothing.
        ({ slices: plan } = logGpuPlan(
          planNodeSlices({
            visibleDevices: options.visibleDevices ?? env.CUDA_VISIBLE_DEVICES,
            gpusOnNode: options.gpusOnNode ?? env.SLURM_GPUS_ON_NODE,
            gpuCount: options.gpusPerNode,
            tensorParallelSize: options.tensorParallelSize ?? 1,
            // Any valid base for planning when ports are chosen freely (0).
            basePort: options.basePort || (options.basePort === 0 ? 1 : 8001),
          }),
          log,
        ));
      } catch (error) {
        if (error instanceof SlicePlanError) {
          throw new WorkerError('invalid_option', error.message, {
            param: kebab(error.param),
            cause: error,
          });
        }
        throw error;
      }
      const host = await resolveAdvertiseHost({
        host: options.host,
        schedulerUrl: options.schedulerUrl,
      });
      const engineVersion = await probeVersion();
      if (stopping) return;
      if (logDir === undefined) logDir = mkdtempSync(join(tmpdir(), `es-worker-${options.jobId}-`));
      else mkdirSync(logDir, { recursive: true, mode: 0o700 });
      socketDir = mkdtempSync(socketBase(env));
      if (!adapter.unixSocket(engineVersion)) {
        log.warn(
          { engine: options.engine, version: engineVersion },
          `${options.engine} ${engineVersion ?? '(version unknown)'} cannot listen on a Unix socket: ` +
            'engines listen on loopback behind the authenticating front (other users of this node can reach loopback: use --exclusive nodes)',
        );
      }
      const dirs = { host, logDir, socketDir };
      for (const slice of plan) engines.push(supervise(slice, dirs, engineVersion));
      try {
        for (const engine of engines) {
          await engine.listen(options.basePort === 0);
          if (stopping) return;
          await engine.launch();
        }
        await Promise.all(
          engines.map(async (engine) => {
            await link.register(engine);
            if (!stopping) link.startHeartbeats(engine);
          }),
        );
      } catch (error) {
        if (error instanceof FencedError) {
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
      engines.map((engine): InstanceStatus => ({
        index: engine.index,
        gpus: [...engine.gpus],
        port: engine.port,
        state:
          ended.get(engine.index) ??
          (engine.health.phase === 'starting' ? 'starting' : reportedState(engine.health)),
        workerId: link.workerId(engine.index),
        pid: engine.pid,
        logFile: engine.logFile,
        crashes: engine.health.crashes,
        load: engine.load,
      })),
    killEnginesSync() {
      for (const engine of engines) engine.killSync();
    },
  };
}

/**
 * Prefix of the private socket directory: under `$TMPDIR` (SLURM's per-job one when set),
 * or /tmp when that path is too long for a Unix socket address (108 bytes on Linux).
 */
function socketBase(env: NodeJS.ProcessEnv): string {
  const base = join(env.TMPDIR || tmpdir(), 'es-');
  // mkdtemp adds 6 characters, the socket name ~20 (`/engine-<index>.sock`).
  return base.length + 6 + 24 < 108 ? base : '/tmp/es-';
}

/**
 * One line with the GPUs and the instances planned, and a warning per note of the plan
 * (idle GPUs, an allocation that differs from --gpus-per-node).
 */
function logGpuPlan(plan: SlicePlan, log: WorkerLogger): SlicePlan {
  const instances = plan.slices.length;
  log.info(
    { gpus: plan.gpus, source: plan.source, instances, idle: plan.idle },
    `GPUs ${plan.gpus.join(',')} (from ${plan.source}): ${instances} engine instance${instances === 1 ? '' : 's'}` +
      (plan.idle.length > 0 ? `, GPUs ${plan.idle.join(',')} idle` : ''),
  );
  for (const note of plan.notes) log.warn({ idle: plan.idle }, note);
  return plan;
}

function kebab(field: string): string {
  const names: Record<string, string> = {
    tensorParallelSize: 'tensor-parallel-size',
    gpuCount: 'gpus-per-node',
    visibleDevices: 'CUDA_VISIBLE_DEVICES',
    gpusOnNode: 'SLURM_GPUS_ON_NODE',
    basePort: 'base-port',
  };
  return names[field] ?? field;
}
