/**
 * The reconciler: the side-effecting loop around the pure planner in `reconcile/`. This file
 * holds its options and public types and the loop itself (tick scheduling, early ticks on a
 * drain or a departure, the liveness timer, start and stop); its parts are in `reconciler/`:
 * one tick's provider calls and ledger changes (tick.ts), the operator's commands
 * (operator.ts), the read model (status.ts) and what they share (context.ts).
 */
import type { NodeProvider, NodeRequest } from './provider.js';
import type { DeploymentConfig } from './deployment.js';
import type { PoolEvent } from './registry.js';
import type {
  DeploymentCatalog,
  JobLedger,
  PoolEventLog,
  PoolOperator,
  PoolReadModel,
} from './roles.js';
import {
  jobDrainDue,
  planHeartbeatTimeouts,
  type ReconcileAction,
  type ReconcileOptions,
} from './reconcile/index.js';
import { createContext, record, report } from './reconciler/context.js';
import { createOperator } from './reconciler/operator.js';
import { buildStatus } from './reconciler/status.js';
import { tick } from './reconciler/tick.js';

export type {
  DeploymentStatus,
  JobStatus,
  ReconcilerStatus,
  ScalingStatus,
} from './reconciler/status.js';

/**
 * What `buildNodeRequest` returns: the worker command, its environment and log directory.
 * `deployment`, `name` and `tag` are set by the reconciler; `gpusPerNode`,
 * `timeLimitMinutes` and `cluster` default to the deployment's.
 */
export type NodeRequestInit = Omit<
  NodeRequest,
  'deployment' | 'name' | 'tag' | 'gpusPerNode' | 'timeLimitMinutes' | 'cluster'
> &
  Partial<Pick<NodeRequest, 'gpusPerNode' | 'timeLimitMinutes' | 'cluster'>>;

/**
 * The registry roles the reconciler uses: the job ledger it plans from and changes, the
 * catalog of deployments it fills, the event log it reports to. `createRegistry()` is one.
 */
export type ReconcilerRegistry = JobLedger & DeploymentCatalog & PoolEventLog;

/** Options of {@link createReconciler}. */
export interface ReconcilerOptions extends Partial<Omit<ReconcileOptions, 'schedulerId'>> {
  registry: ReconcilerRegistry;
  provider: NodeProvider;
  /** Names this scheduler's jobs (`es-<schedulerId>-<deployment>`) so a restart re-adopts them. */
  schedulerId: string;
  /**
   * Build the node request of one submission: the worker command and env (scheduler URL,
   * secret file ...). Called once per submission with its unique tag and the job name.
   */
  buildNodeRequest: (
    deployment: DeploymentConfig,
    tag: string,
    name: string,
  ) => NodeRequestInit | Promise<NodeRequestInit>;
  /** Time between ticks (default 10000 ms). */
  intervalMs?: number;
  /** Shortest gap between two ticks when a drain or a departure triggers an early one (default 500 ms). */
  minTickGapMs?: number;
  /**
   * How often heartbeat timeouts are checked, on a timer of their own that never waits for
   * a tick's provider calls (default a quarter of `heartbeatTimeoutMs`, at most 1000 ms): a
   * silent worker leaves routing within `heartbeatTimeoutMs` plus this, however slow the
   * cluster answers.
   */
  livenessIntervalMs?: number;
  /**
   * Called right before heartbeat timeouts are judged (the liveness check, and each tick's
   * plan): apply the heartbeats another thread
   * has received and not yet handed over (`WorkerApiThread.receivePending`), so that an
   * event loop that ran its timers first does not take a worker it has heard for silent.
   */
  receivePendingHeartbeats?: () => void;
  /**
   * Requests waiting in the proxies for a worker, per deployment (the in-process proxy's
   * queue and the data-plane processes' reports): part of the load demand-aware scaling
   * follows. A request waiting for a deployment scaled to zero asks for a tick at once.
   */
  queued?: () => Readonly<Record<string, number>>;
  /** Clock (default `Date.now`). */
  now?: () => number;
  /** Jitter source in [0, 1) (default `Math.random`). */
  random?: () => number;
  /** Told about every provider failure (logging). */
  onError?: (
    error: unknown,
    context: { action: 'list' | 'submit' | 'cancel' | 'release'; deployment?: string },
  ) => void;
}

/** What one tick did. */
export interface TickResult {
  listed: boolean;
  submitted: string[];
  cancelled: string[];
  actions: ReconcileAction[];
}

/**
 * The reconcile loop. It is also the pool's {@link PoolOperator} (the operator's commands
 * are planned by its ticks) and the {@link PoolReadModel} status views read.
 */
export interface Reconciler extends PoolOperator, PoolReadModel {
  /** Start ticking (first tick at once). */
  start(): void;
  /** Stop ticking; resolves when the current tick is done. Jobs keep running. */
  stop(): Promise<void>;
  /** Run one tick now (waits for a tick in progress instead of overlapping it). */
  tickOnce(): Promise<TickResult>;
  /** Cancel every job of this scheduler (one list, one cancel): `--cancel-on-exit`. */
  cancelAll(): Promise<string[]>;
}

/**
 * Create the reconciler: each tick lists this scheduler's jobs once, plans with
 * `planReconcile`, applies registry changes at once, cancels in one batched call and
 * submits through `provider.submit`.
 * @example
 * const reconciler = createReconciler({
 *   registry, provider, schedulerId: 'es',
 *   buildNodeRequest: (deployment, tag) => ({
 *     command: ['es-worker'], env: { ES_SCHEDULER_URL: url, ES_SECRET_FILE: secretFile },
 *     logDir: 'logs',
 *   }),
 * });
 * reconciler.start();
 */
export function createReconciler(options: ReconcilerOptions): Reconciler {
  const ctx = createContext(options);
  const { registry, now, planOptions } = ctx;
  const intervalMs = options.intervalMs ?? 10_000;
  const minTickGapMs = options.minTickGapMs ?? 500;
  const livenessIntervalMs =
    options.livenessIntervalMs ?? Math.min(1000, planOptions.heartbeatTimeoutMs / 4);

  let timer: NodeJS.Timeout | undefined;
  let livenessTimer: NodeJS.Timeout | undefined;
  let current: Promise<TickResult> | undefined;
  let lastTickEnd = 0;

  function runTick(): Promise<TickResult> {
    if (current !== undefined) return current;
    current = tick(ctx).finally(() => {
      current = undefined;
      lastTickEnd = now();
    });
    return current;
  }

  /** A tick that plans after this moment: the one in progress (if any), then a new one. */
  async function freshTick(): Promise<TickResult[]> {
    const results: TickResult[] = [];
    if (current !== undefined) results.push(await current);
    results.push(await runTick());
    return results;
  }

  // A tick waits for squeue, sbatch and scancel; this does not. A tick in progress plans
  // after its list returns, from the state and registry as they are then, so it sees what
  // this took out (the 'gone' event asks for an early tick when none is running). Only the
  // silent workers are copied: this runs every second over every worker.
  function checkLiveness(): void {
    options.receivePendingHeartbeats?.();
    const at = now();
    const plan = planHeartbeatTimeouts({
      now: at,
      workers: registry.silentWorkers(at - planOptions.heartbeatTimeoutMs),
      state: ctx.state,
      options: planOptions,
    });
    ctx.state = plan.state;
    for (const action of plan.actions) record(ctx, action);
    askForDueJobDrains(at);
    askForColdStart(at);
  }

  // A request waiting for a deployment with no node (scaled to zero) asks for a tick now:
  // its client waits for a job to be submitted and its engines to load.
  function askForColdStart(at: number): void {
    if (!ctx.running || current !== undefined || options.queued === undefined) return;
    const queued = options.queued();
    const cold = Object.entries(ctx.state.scaling).some(
      ([name, scale]) => scale.target === 0 && (queued[name] ?? 0) > 0,
    );
    if (cold) schedule(Math.max(0, lastTickEnd + minTickGapMs - at));
  }

  // A drained job is cancelled by a tick; one is asked for as soon as its workers are idle
  // (or its grace is over), once per drain, not at the next regular tick.
  const askedForDrain = new Map<string, number>();
  function askForDueJobDrains(at: number): void {
    for (const [jobId, drainedAt] of askedForDrain) {
      if (ctx.state.jobDrains[jobId]?.drainedAt !== drainedAt) askedForDrain.delete(jobId);
    }
    if (!ctx.running || current !== undefined) return;
    for (const drain of Object.values(ctx.state.jobDrains)) {
      if (drain.cancelRequestedAt !== undefined) continue;
      if (askedForDrain.get(drain.jobId) === drain.drainedAt) continue;
      const workers = (registry.job(drain.jobId)?.workerIds ?? []).flatMap(
        (id) => registry.worker(id) ?? [],
      );
      if (!jobDrainDue(drain, workers, at, planOptions)) continue;
      askedForDrain.set(drain.jobId, drain.drainedAt);
      schedule(Math.max(0, lastTickEnd + minTickGapMs - at));
      return;
    }
  }

  function schedule(delayMs: number): void {
    if (!ctx.running) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void runTick()
        .catch((error: unknown) => report(ctx, error, { action: 'list' }))
        .finally(() => schedule(intervalMs));
    }, delayMs);
  }

  // A drain notice or a departing worker asks for the replacement at once, not at the next
  // regular tick.
  let unsubscribe: (() => void) | undefined;
  const onEvent = (event: PoolEvent): void => {
    if (!ctx.running || current !== undefined || event.workerId === undefined) return;
    if (event.type !== 'draining' && event.type !== 'gone' && event.type !== 'failed') return;
    if (event.type === 'draining' && registry.worker(event.workerId)?.state !== 'draining') return;
    schedule(Math.max(0, lastTickEnd + minTickGapMs - now()));
  };

  const operator = createOperator(ctx, { freshTick, askForDueJobDrains });

  return {
    start() {
      if (ctx.running) return;
      ctx.running = true;
      ctx.stopped = false;
      unsubscribe = registry.on(onEvent);
      schedule(0);
      livenessTimer = setInterval(checkLiveness, livenessIntervalMs);
    },

    async stop() {
      ctx.running = false;
      ctx.stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      clearInterval(livenessTimer);
      livenessTimer = undefined;
      unsubscribe?.();
      unsubscribe = undefined;
      await current?.catch(() => undefined);
    },

    tickOnce: runTick,

    status: () => buildStatus(ctx),
    worker: (workerId) => registry.worker(workerId),

    setMaxNodes: operator.setMaxNodes,
    drainWorker: operator.drainWorker,
    drainJob: operator.drainJob,
    resume: operator.resume,
    cancelAll: operator.cancelAll,
  };
}
