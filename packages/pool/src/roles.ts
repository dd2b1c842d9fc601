/**
 * The roles of the pool, one interface per consumer. The registry implements every
 * registry role and the reconciler the operator and read-model roles, but each consumer
 * takes only the role it uses: the proxy a `PoolView` (view.ts), the worker API a
 * {@link WorkerLedger}, the reconciler a {@link JobLedger}, a {@link DeploymentCatalog} and
 * a {@link PoolEventLog}, the admin API a {@link PoolOperator}, a {@link PoolReadModel} and a
 * {@link PoolEventFeed}. Tests build any of them by hand.
 */
import type { DeploymentConfig } from './deployment.js';
import type { HeartbeatRequest, RegisterRequest, RegisterResponse } from '@es/protocol';
import type {
  JobInfo,
  PoolEvent,
  PoolEventListener,
  RegistrySnapshot,
  WorkerInfo,
} from './registry.js';
import type { ReconcilerStatus } from './reconciler.js';
import type { DeploymentView, RoutableWorker, RoutingChange } from './view.js';

/**
 * The routable sets as the control plane decides them: workers `ready` (not loading or
 * unready, not draining, not failed or gone), before any passive ejection. Ejections are
 * per data-plane process (each ejects for its own failed attempts), so what every process
 * starts from, the routing-table watch stream, is this set, not this process's `routable`.
 */
export interface ControlPlaneRouting {
  /** All deployments served. */
  deployments(): readonly DeploymentView[];
  /** The control plane's routable set of `deployment` (replaced, never mutated, on change). */
  controlRoutable(deployment: string): readonly RoutableWorker[];
  /** Every entry into and exit from a control-plane routable set; returns the unsubscribe. */
  onControlRoutingChange(listener: (change: RoutingChange) => void): () => void;
  /**
   * A deployment's view changed (added, its config replaced, its `expectedReadyAt` set):
   * `deployments()` returns a new array with the new view before listeners run. Optional (a
   * source without it is compared at its next routing change or heartbeat); returns the
   * unsubscribe function.
   */
  onDeploymentChange?(listener: (deployment: string) => void): () => void;
}

/**
 * What the data plane's reports add to the registry: the requests each worker served through
 * a data-plane process (`requests_served` of `/workers`, `SERVED` of `es status`), counted as
 * the in-process proxy counts its own successful attempts, and the requests each worker has
 * in flight through them, added to the in-process proxy's own (`WorkerInfo.inFlight`): what
 * the reconciler waits for before it cancels a drained job.
 */
export interface DataPlaneAccounting {
  /** `requests` more requests served by `workerId` (an unknown id is ignored). */
  recordServed(workerId: string, requests: number): void;
  /**
   * The requests in flight through the data-plane processes, per worker, summed over the
   * processes that report (the latest totals replace the previous; a worker left out has none).
   */
  recordDataPlaneInFlight(totals: ReadonlyMap<string, number>): void;
}

/**
 * What the worker protocol changes: the scheduler side of register, heartbeat, drain,
 * deregister and handover (`createWorkerApi` takes this). Failures are `PoolError`s the worker API
 * answers as they are: `unknown_deployment` and `unknown_worker` (404: register again),
 * `fenced` (409: exit).
 */
export interface WorkerLedger {
  /** Register one engine instance. Throws `PoolError` (404 deployment, 409 fenced). */
  register(request: RegisterRequest): RegisterResponse;
  /** A heartbeat. Throws `PoolError` 404 (register again) or 409 (fenced: exit). */
  heartbeat(workerId: string, request: HeartbeatRequest): void;
  /** The worker's own drain notice; it leaves routing before this returns. */
  drain(workerId: string, reason: string): void;
  /** Clean exit. */
  deregister(workerId: string, reason: string): void;
  /**
   * A draining worker's engines stop in `stopInMs`: the generations still running on
   * `workerIds` are to be continued elsewhere. Each known worker is announced once to the
   * `onWorkerLost` listeners with a reason starting `hand-over` and recorded as a
   * `hand-over` event; it stays draining (one still in service starts draining first; one
   * already gone, e.g. its job listed COMPLETING since the SIGTERM, is announced all the
   * same: its engines still run).
   * Returns the ids it knows; throws `PoolError` `unknown_worker` (404) when it knows none.
   */
  handOver(workerIds: readonly string[], reason: string, stopInMs: number): string[];
}

/** Workers as copies (mutating one changes nothing), for views and look-ups. */
export interface WorkerDirectory {
  /** One worker, including a gone one still retained. */
  worker(workerId: string): WorkerInfo | undefined;
  /** Workers (all, or of one deployment), including gone ones still retained. */
  workers(deployment?: string): WorkerInfo[];
}

/**
 * What the reconciler reads and changes about node jobs and their workers: the plain-data
 * snapshot it plans from, and the changes its plans make (incarnations, ends, drains,
 * timeouts). Every change takes the workers concerned out of routing before it returns.
 */
export interface JobLedger extends WorkerDirectory {
  /** A plain-data copy of jobs and workers. Drops gone workers past their retention. */
  snapshot(): RegistrySnapshot;
  /** One job, as a copy: `undefined` when no worker of it ever registered here. */
  job(jobId: string): JobInfo | undefined;
  /**
   * Workers still in service (neither gone nor failed) whose last heartbeat is older than
   * `before` (ms), as copies. Nothing is copied for the others: the liveness check calls
   * it every second over every worker.
   */
  silentWorkers(before: number): WorkerInfo[];
  /** Record a restart count seen in the cluster's list; older incarnations are fenced. */
  noteIncarnation(jobId: string, deployment: string, restartCount: number): void;
  /** Take every worker of a job (up to `restartCount`, default its newest) out of service. */
  endJob(jobId: string, reason: string, restartCount?: number): void;
  /** Scheduler-initiated drain of every worker of a job (no new requests, in-flight finish). */
  drainJob(jobId: string, reason: string): void;
  /** Scheduler-initiated drain of one worker; a gone, failed or unknown one is left as it is. */
  drainWorker(workerId: string, reason: string): void;
  /** Mark one worker gone (e.g. heartbeat timeout). */
  markGone(workerId: string, reason: string): void;
  /** Forget a job and its workers (after it left the cluster's list). */
  forgetJob(jobId: string): void;
}

/** The deployments served and their configs. */
export interface DeploymentCatalog {
  /** Add a deployment, or replace the config of a served one in place (same workers). */
  addDeployment(config: DeploymentConfig): void;
  /** The config of a deployment, if served. */
  deploymentConfig(name: string): DeploymentConfig | undefined;
  /** Every deployment config. */
  deploymentConfigs(): readonly DeploymentConfig[];
  /**
   * Set (epoch ms) or clear (`undefined`) when a node of `name` is expected to be ready: its
   * view's `expectedReadyAt`, which a request whose cold-start wait runs out is given as
   * `Retry-After`. Replaces the view and tells deployment listeners (the watch stream carries
   * it to every data-plane process) when the value changes; an unknown name is ignored.
   */
  setDeploymentExpectedReady(name: string, at: number | undefined): void;
}

/** Reading the lifecycle events (status views, metrics, logs). */
export interface PoolEventFeed {
  /** Subscribe to events; returns the unsubscribe function. Listener exceptions are swallowed. */
  on(listener: PoolEventListener): () => void;
  /** The most recent events, oldest first (at most `limit`). */
  recentEvents(limit?: number): PoolEvent[];
}

/** The lifecycle event log: recording (the reconciler) and reading. */
export interface PoolEventLog extends PoolEventFeed {
  /** Record an event (`at` defaults to the log's clock). */
  emit(event: Omit<PoolEvent, 'at'> & { at?: number }): void;
}

/** What a status view reads: the whole status, and one worker by id (its log file ...). */
export interface PoolReadModel {
  /** Jobs, workers, backoff and errors per deployment. */
  status(): ReconcilerStatus;
  /** One worker, as a copy. */
  worker(workerId: string): WorkerInfo | undefined;
}

/** What {@link PoolOperator.setMaxNodes} did. */
export interface ScaleResult {
  deployment: string;
  previousMaxNodes: number;
  maxNodes: number;
  /** Jobs of the deployment cancelled at once because they were over the new maximum. */
  cancelled: string[];
}

/** What a drain took out of routing. */
export interface DrainResult {
  /** Workers taken out of routing (a job drain names every worker of the job). */
  drained: string[];
  /** The job to be cancelled once idle (job drains only). */
  jobId?: string;
}

/**
 * The operator's commands, as operations of the pool: the reconciler plans what each one
 * implies (which jobs to cancel, when), so a cancelled job's workers always leave routing
 * before the cancel, whoever asked for it. Refusals are `PoolError`s: `unknown_deployment`,
 * `invalid_request` (param `maxNodes`), `unknown_worker`, `unknown_job`.
 * @example
 * const { cancelled } = await operator.setMaxNodes('qwen', 1);
 * operator.drainJob('4242'); // drained now, cancelled once idle, then replaced
 */
export interface PoolOperator {
  /**
   * Set a deployment's `maxNodes` now (not persisted: a restart starts from the config).
   * Resolves after a reconcile tick planned with it: lowering cancels the surplus (pending
   * jobs first, then the newest running) and its workers leave routing first; raising
   * submits.
   */
  setMaxNodes(deployment: string, maxNodes: number): Promise<ScaleResult>;
  /** Take one worker out of routing; it stays draining until its job ends. */
  drainWorker(workerId: string): DrainResult;
  /**
   * Take every worker of a job out of routing now; the job is cancelled once their
   * in-flight requests are done (or after the reconciler's `jobDrainGraceMs`) and replaced
   * like any other departure. Returns after the drain, not after the cancel.
   */
  drainJob(jobId: string): DrainResult;
  /** Clear a deployment's permanent error, backoff and launch-failure wait so it submits again. */
  resume(deployment: string): void;
}
