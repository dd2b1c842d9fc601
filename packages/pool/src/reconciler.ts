import { WORKER_ENV } from '@es/protocol';
import {
  classifyProviderError,
  type NodeProvider,
  type NodeRequest,
  type ObservedJob,
} from './provider.js';
import { jobNameFor, type DeploymentConfig } from './deployment.js';
import { PoolError } from './errors.js';
import type { PoolEvent, WorkerInfo, WorkerState } from './registry.js';
import type {
  DeploymentCatalog,
  JobLedger,
  PoolEventLog,
  PoolOperator,
  PoolReadModel,
} from './roles.js';
import {
  DEFAULT_RECONCILE_OPTIONS,
  abandonSubmission,
  initialReconcilerState,
  isLiveState,
  jobDrainDue,
  planHeartbeatTimeouts,
  planJobDrain,
  planReconcile,
  resumeDeployment,
  settleCancel,
  settleSubmission,
  type ReconcileAction,
  type ReconcileOptions,
  type ReconcilerState,
} from './reconcile/index.js';

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
  /** Clock (default `Date.now`). */
  now?: () => number;
  /** Jitter source in [0, 1) (default `Math.random`). */
  random?: () => number;
  /** Told about every provider failure (logging). */
  onError?: (
    error: unknown,
    context: { action: 'list' | 'submit' | 'cancel'; deployment?: string },
  ) => void;
}

/** A job as the status view shows it. */
export interface JobStatus {
  jobId: string;
  tag: string;
  state: string;
  reason: string;
  nodes: string;
  restartCount: number;
  /** Seconds since this scheduler first saw the job. */
  ageSeconds: number;
  /** Seconds before the time limit, when the cluster reports it. */
  timeLeftSeconds?: number;
  /** Seconds since the job's current incarnation was seen RUNNING. */
  runningSeconds?: number;
  /** Draining for a time-limit successor. */
  retiring: boolean;
  /** A worker announced a drain (preemption, scancel ...). */
  drained: boolean;
  /** Why the reconciler cancelled it. */
  cancelReason?: string;
  /** When it ended (ms), if it has. */
  endedAt?: number;
  workers: { id: string; state: WorkerState }[];
}

/** One deployment in the status view. */
export interface DeploymentStatus {
  name: string;
  jobName: string;
  maxNodes: number;
  jobs: JobStatus[];
  workers: WorkerInfo[];
  readyWorkers: number;
  /** Submissions in flight or waiting to be seen in a list (ambiguous failures included). */
  submitting: number;
  backoff?: { kind: 'transient' | 'policy'; until: number; attempts: number; message: string };
  /** Set when a permanent failure stopped submissions (call `resume` after fixing it). */
  permanentError?: string;
  /**
   * Set while the deployment's jobs keep ending before any worker is ready: how many in a
   * row, the last one, how it ended, and when the next replacement may be submitted.
   */
  launchFailures?: { count: number; until: number; lastJobId: string; message: string };
  /** Most recent provider errors, oldest first. */
  lastErrors: { at: number; action: string; message: string }[];
}

/** The reconciler's read model. */
export interface ReconcilerStatus {
  schedulerId: string;
  provider: string;
  running: boolean;
  lastTickAt?: number;
  lastListAt?: number;
  /** Consecutive failed lists (the cluster state is "unknown" meanwhile). */
  listFailures: number;
  lastListError?: string;
  deployments: DeploymentStatus[];
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

const ERRORS_KEPT = 10;
/** The reason an operator's drain gives (events, worker and job status). */
const OPERATOR_DRAIN = 'drained by an operator';

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
  const { registry, provider, schedulerId } = options;
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const intervalMs = options.intervalMs ?? 10_000;
  const minTickGapMs = options.minTickGapMs ?? 500;
  const planOptions: ReconcileOptions = { ...DEFAULT_RECONCILE_OPTIONS, schedulerId };
  for (const key of Object.keys(
    DEFAULT_RECONCILE_OPTIONS,
  ) as (keyof typeof DEFAULT_RECONCILE_OPTIONS)[]) {
    const value = options[key];
    if (value !== undefined) planOptions[key] = value;
  }

  const livenessIntervalMs =
    options.livenessIntervalMs ?? Math.min(1000, planOptions.heartbeatTimeoutMs / 4);

  let state: ReconcilerState = initialReconcilerState();
  let running = false;
  let timer: NodeJS.Timeout | undefined;
  let livenessTimer: NodeJS.Timeout | undefined;
  let current: Promise<TickResult> | undefined;
  let lastTickAt: number | undefined;
  let lastTickEnd = 0;
  let lastListError: string | undefined;
  const errors = new Map<string, DeploymentStatus['lastErrors']>();
  let stopped = false;

  const noteError = (deployment: string, action: string, error: unknown) => {
    const list = errors.get(deployment) ?? [];
    list.push({ at: now(), action, message: classifyProviderError(error).message });
    if (list.length > ERRORS_KEPT) list.shift();
    errors.set(deployment, list);
  };
  const report = (
    error: unknown,
    context: { action: 'list' | 'submit' | 'cancel'; deployment?: string },
  ) => {
    try {
      options.onError?.(error, context);
    } catch {
      // Logging must not break the loop.
    }
  };

  /** Apply one planned change to the ledger or the event log (provider calls are not here). */
  function record(action: ReconcileAction): void {
    switch (action.type) {
      case 'note-incarnation':
        registry.noteIncarnation(action.jobId, action.deployment, action.restartCount);
        break;
      case 'end-job':
        registry.endJob(action.jobId, action.reason, action.restartCount);
        break;
      case 'drain-job':
        registry.drainJob(action.jobId, action.reason);
        break;
      case 'worker-gone':
        registry.markGone(action.workerId, action.reason);
        break;
      case 'forget-job':
        registry.forgetJob(action.jobId);
        break;
      case 'event':
        registry.emit(action.event);
        break;
      default:
        break;
    }
  }

  function servedDeployment(name: string): DeploymentConfig {
    const config = registry.deploymentConfig(name);
    if (config === undefined) {
      throw new PoolError('unknown_deployment', `deployment ${name} is not served here`, {
        param: 'deployment',
      });
    }
    return config;
  }

  function names(): string[] {
    return registry.deploymentConfigs().map((d) => jobNameFor(schedulerId, d.name));
  }

  async function tick(): Promise<TickResult> {
    const result: TickResult = { listed: false, submitted: [], cancelled: [], actions: [] };
    const observedAt = now();
    let observed: ObservedJob[] | 'unknown';
    try {
      observed = await provider.list({ names: names() });
      result.listed = true;
      lastListError = undefined;
    } catch (error) {
      observed = 'unknown';
      lastListError = classifyProviderError(error).message;
      report(error, { action: 'list' });
    }
    const deployments = registry.deploymentConfigs();
    // The plan judges heartbeat timeouts too: from every heartbeat received so far.
    options.receivePendingHeartbeats?.();
    const plan = planReconcile({
      now: now(),
      deployments,
      observed,
      observedAt,
      registry: registry.snapshot(),
      state,
      options: planOptions,
      jitter: random(),
    });
    state = plan.state;
    result.actions = plan.actions;

    // Registry changes first: workers leave routing before any slow provider call (the
    // drains of the jobs about to be cancelled included).
    for (const action of plan.actions) record(action);

    for (const action of plan.actions) {
      if (action.type !== 'cancel') continue;
      const ids = action.jobs.map((j) => j.jobId);
      try {
        await provider.cancel(ids);
        result.cancelled.push(...ids);
        for (const job of action.jobs) {
          registry.emit({
            type: 'cancelled',
            deployment: job.deployment,
            jobId: job.jobId,
            reason: job.reason,
          });
        }
      } catch (error) {
        state = settleCancel(state, ids, false);
        for (const job of action.jobs) noteError(job.deployment, 'cancel', error);
        report(error, { action: 'cancel' });
      }
    }

    for (const action of plan.actions) {
      if (action.type !== 'submit') continue;
      const deployment = deployments.find((d) => d.name === action.deployment);
      // A failure earlier in this tick set a backoff: do not hammer the controller.
      if (
        deployment === undefined ||
        stopped ||
        state.permanent[action.deployment] !== undefined ||
        (state.backoff[action.deployment]?.until ?? 0) > now()
      ) {
        state = abandonSubmission(state, action.tag);
        continue;
      }
      const name = jobNameFor(schedulerId, deployment.name);
      try {
        const init = await options.buildNodeRequest(deployment, action.tag, name);
        const request: NodeRequest = {
          gpusPerNode: deployment.gpusPerNode,
          ...init,
          env: { [WORKER_ENV.deployment]: deployment.name, ...init.env },
          deployment: deployment.name,
          name,
          tag: action.tag,
        };
        const timeLimit = init.timeLimitMinutes ?? deployment.timeLimitMinutes;
        if (timeLimit !== undefined) request.timeLimitMinutes = timeLimit;
        const cluster = init.cluster ?? deployment.cluster;
        if (cluster !== undefined) request.cluster = cluster;
        const jobId = await provider.submit(request);
        state = settleSubmission(
          state,
          action.tag,
          { ok: true, jobId },
          now(),
          planOptions,
          random(),
        );
        result.submitted.push(jobId);
        registry.emit({
          type: 'submitted',
          deployment: deployment.name,
          jobId,
          reason: action.reason,
        });
        if (action.replaces !== undefined) {
          registry.emit({
            type: 'replaced',
            deployment: deployment.name,
            jobId: action.replaces,
            reason: `by job ${jobId} (${action.reason})`,
          });
        }
      } catch (error) {
        const failure = classifyProviderError(error);
        state = settleSubmission(
          state,
          action.tag,
          { ok: false, failure },
          now(),
          planOptions,
          random(),
        );
        noteError(deployment.name, 'submit', error);
        report(error, { action: 'submit', deployment: deployment.name });
        registry.emit({
          type: 'failed',
          deployment: deployment.name,
          reason: `submit failed (${failure.kind}${failure.ambiguous ? ', ambiguous' : ''}): ${failure.message}`,
        });
      }
    }
    lastTickAt = observedAt;
    return result;
  }

  function runTick(): Promise<TickResult> {
    if (current !== undefined) return current;
    current = tick().finally(() => {
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
      state,
      options: planOptions,
    });
    state = plan.state;
    for (const action of plan.actions) record(action);
    askForDueJobDrains(at);
  }

  // A drained job is cancelled by a tick; one is asked for as soon as its workers are idle
  // (or its grace is over), once per drain, not at the next regular tick.
  const askedForDrain = new Map<string, number>();
  function askForDueJobDrains(at: number): void {
    for (const [jobId, drainedAt] of askedForDrain) {
      if (state.jobDrains[jobId]?.drainedAt !== drainedAt) askedForDrain.delete(jobId);
    }
    if (!running || current !== undefined) return;
    for (const drain of Object.values(state.jobDrains)) {
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
    if (!running) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void runTick()
        .catch((error: unknown) => report(error, { action: 'list' }))
        .finally(() => schedule(intervalMs));
    }, delayMs);
  }

  // A drain notice or a departing worker asks for the replacement at once, not at the next
  // regular tick.
  let unsubscribe: (() => void) | undefined;
  const onEvent = (event: PoolEvent): void => {
    if (!running || current !== undefined || event.workerId === undefined) return;
    if (event.type !== 'draining' && event.type !== 'gone' && event.type !== 'failed') return;
    if (event.type === 'draining' && registry.worker(event.workerId)?.state !== 'draining') return;
    schedule(Math.max(0, lastTickEnd + minTickGapMs - now()));
  };

  return {
    start() {
      if (running) return;
      running = true;
      stopped = false;
      unsubscribe = registry.on(onEvent);
      schedule(0);
      livenessTimer = setInterval(checkLiveness, livenessIntervalMs);
    },

    async stop() {
      running = false;
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      clearInterval(livenessTimer);
      livenessTimer = undefined;
      unsubscribe?.();
      unsubscribe = undefined;
      await current?.catch(() => undefined);
    },

    tickOnce: runTick,

    status() {
      const at = now();
      const deployments: DeploymentStatus[] = registry.deploymentConfigs().map((d) => {
        const workers = registry.workers(d.name);
        const jobs: JobStatus[] = Object.values(state.jobs)
          .filter((j) => j.deployment === d.name)
          .map((j) => {
            const status: JobStatus = {
              jobId: j.jobId,
              tag: j.tag,
              state: j.state,
              reason: j.reason,
              nodes: j.nodes,
              restartCount: j.restartCount,
              ageSeconds: Math.round(
                (at - Math.min(j.firstSeen, j.submitTime ?? j.firstSeen)) / 1000,
              ),
              retiring: j.retiringSince !== undefined,
              drained: j.drainedAt !== undefined,
              workers: workers
                .filter((w) => w.jobId === j.jobId)
                .map((w) => ({ id: w.id, state: w.state })),
            };
            if (j.timeLeftSeconds !== undefined && isLiveState(j.state)) {
              status.timeLeftSeconds = Math.max(
                0,
                Math.round(j.timeLeftSeconds - (at - j.lastSeen) / 1000),
              );
            }
            if (j.runningSince !== undefined)
              status.runningSeconds = Math.round((at - j.runningSince) / 1000);
            if (j.cancelReason !== undefined) status.cancelReason = j.cancelReason;
            if (j.endedAt !== undefined) status.endedAt = j.endedAt;
            return status;
          });
        const out: DeploymentStatus = {
          name: d.name,
          jobName: jobNameFor(schedulerId, d.name),
          maxNodes: d.maxNodes,
          jobs,
          workers,
          readyWorkers: workers.filter((w) => w.state === 'ready').length,
          submitting: Object.values(state.submissions).filter((s) => s.deployment === d.name)
            .length,
          lastErrors: [...(errors.get(d.name) ?? [])],
        };
        const backoff = state.backoff[d.name];
        if (backoff !== undefined && backoff.until > at) {
          out.backoff = {
            kind: backoff.kind,
            until: backoff.until,
            attempts: backoff.attempts,
            message: backoff.message,
          };
        }
        const permanent = state.permanent[d.name];
        if (permanent !== undefined) out.permanentError = permanent.message;
        const launch = state.launchFailures[d.name];
        if (launch !== undefined) out.launchFailures = { ...launch };
        return out;
      });
      const status: ReconcilerStatus = {
        schedulerId,
        provider: provider.kind,
        running,
        listFailures: state.listFailures,
        deployments,
      };
      if (lastTickAt !== undefined) status.lastTickAt = lastTickAt;
      if (state.lastListAt !== undefined) status.lastListAt = state.lastListAt;
      if (lastListError !== undefined) status.lastListError = lastListError;
      return status;
    },

    worker: (workerId) => registry.worker(workerId),

    async setMaxNodes(deployment, maxNodes) {
      const config = servedDeployment(deployment);
      if (!Number.isInteger(maxNodes) || maxNodes < 0) {
        throw new PoolError(
          'invalid_request',
          `maxNodes must be an integer >= 0, got ${String(maxNodes)}`,
          { param: 'maxNodes' },
        );
      }
      const previousMaxNodes = config.maxNodes;
      registry.addDeployment({ ...config, maxNodes });
      // A tick in progress may have planned with the old maximum: its cancels count too.
      const cancelled = new Set<string>();
      for (const tick of await freshTick()) {
        for (const action of tick.actions) {
          if (action.type !== 'cancel') continue;
          for (const job of action.jobs) {
            if (job.deployment === deployment && tick.cancelled.includes(job.jobId)) {
              cancelled.add(job.jobId);
            }
          }
        }
      }
      return { deployment, previousMaxNodes, maxNodes, cancelled: [...cancelled] };
    },

    drainWorker(workerId) {
      const worker = registry.worker(workerId);
      if (worker === undefined || worker.state === 'gone') {
        throw new PoolError('unknown_worker', `worker ${workerId} is not registered`, {
          workerId,
          param: 'workerId',
        });
      }
      registry.drainWorker(workerId, OPERATOR_DRAIN);
      return { drained: [workerId] };
    },

    drainJob(jobId) {
      const job = registry.job(jobId);
      if (job === undefined) {
        throw new PoolError('unknown_job', `job ${jobId} has no registered worker here`, {
          jobId,
          param: 'jobId',
        });
      }
      const at = now();
      const plan = planJobDrain(state, {
        jobId,
        deployment: job.deployment,
        reason: OPERATOR_DRAIN,
        now: at,
      });
      state = plan.state;
      for (const action of plan.actions) record(action);
      askForDueJobDrains(at);
      return { drained: job.workerIds, jobId };
    },

    resume(deployment) {
      servedDeployment(deployment);
      state = resumeDeployment(state, deployment);
    },

    async cancelAll() {
      let jobs: ObservedJob[];
      try {
        jobs = await provider.list({ names: names() });
      } catch (error) {
        throw new PoolError(
          'closed',
          `cannot list jobs to cancel them: ${classifyProviderError(error).message}`,
          {
            cause: error,
          },
        );
      }
      const ids = jobs.filter((j) => isLiveState(j.state)).map((j) => j.id);
      if (ids.length > 0) await provider.cancel(ids);
      return ids;
    },
  };
}
