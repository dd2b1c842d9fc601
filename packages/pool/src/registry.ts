/**
 * The registry of deployments, node jobs and workers: its public types and
 * `createRegistry`, which assembles it from its parts in `registry/`: the records and the
 * fencing rule (records.ts), the routing views (routing.ts), the worker state machine
 * (lifecycle.ts), the worker protocol's side with the heartbeat bookkeeping
 * (worker-ledger.ts), the reconciler's side (job-ledger.ts) and the event log (events.ts).
 */
import type { EngineKind, EngineLoad } from '@es/protocol';
import type { PoolView, RoutingChange } from './view.js';
import type { DeploymentConfig } from './deployment.js';
import type {
  ControlPlaneRouting,
  DataPlaneAccounting,
  DeploymentCatalog,
  JobLedger,
  PoolEventLog,
  WorkerLedger,
} from './roles.js';
import { createEventLog } from './registry/events.js';
import { createJobLedger } from './registry/job-ledger.js';
import { createLifecycle } from './registry/lifecycle.js';
import type { RegistryStore } from './registry/records.js';
import { createRouting } from './registry/routing.js';
import { createWorkerLedger } from './registry/worker-ledger.js';

/** Lifecycle of one engine instance as the scheduler tracks it. */
export type WorkerState = 'starting' | 'loading' | 'ready' | 'draining' | 'failed' | 'gone';

/** Kinds of lifecycle events. */
export type PoolEventType =
  | 'submitted'
  | 'running'
  | 'registered'
  | 'ready'
  /** A ready worker out of routing for a while: its engine stopped answering (liveness), or it was passively ejected. */
  | 'unready'
  | 'draining'
  /** A draining worker's engines stop soon: the generations still running on it are continued elsewhere. */
  | 'hand-over'
  /** A generation cut on this worker was continued on another (or could not be: see `reason`). */
  | 'continuation'
  | 'gone'
  | 'preempted'
  /** A requeued job's begin time was lifted (`NodeProvider.release`): it starts as soon as a node is free. */
  | 'released'
  | 'replaced'
  /** A deployment's demand-aware target changed: `reason` gives from, to and the inputs. */
  | 'scaled'
  | 'cancelled'
  | 'failed'
  | 'adopted';

/** One lifecycle event (listener API and the ring buffer of recent events). */
export interface PoolEvent {
  type: PoolEventType;
  /** ms since epoch (the registry's clock). */
  at: number;
  deployment: string;
  jobId?: string;
  workerId?: string;
  reason?: string;
}

/** A worker as the status views see it (a copy; mutating it changes nothing). */
export interface WorkerInfo {
  id: string;
  deployment: string;
  jobId: string;
  restartCount: number;
  index: number;
  host: string;
  port: number;
  baseUrl: string;
  node: string;
  gpus: number[];
  engine: EngineKind;
  model: string;
  state: WorkerState;
  /** Why the worker is draining, failed or gone. */
  reason?: string;
  registeredAt: number;
  lastHeartbeat: number;
  load?: EngineLoad;
  inFlight: number;
  requestsServed: number;
  /** Passively ejected until this time (ms), after repeated upstream failures. */
  ejectedUntil?: number;
  logFile?: string;
  pid?: number;
}

/** What the registry knows about one node job (from registrations and the reconciler). */
export interface JobInfo {
  jobId: string;
  deployment: string;
  /** Newest restart count seen (registration, heartbeat or the cluster's list). */
  restartCount: number;
  /** First registration of the newest incarnation, if any worker registered. */
  registeredAt?: number;
  /** Incarnations up to and including this one have ended: their workers are fenced. */
  endedIncarnation?: number;
  workerIds: string[];
}

/** Plain-data copy of the registry for the reconciler's planner. */
export interface RegistrySnapshot {
  jobs: JobInfo[];
  workers: WorkerInfo[];
}

/** Options of {@link createRegistry}. */
export interface RegistryOptions {
  /** Deployments served from the start (more with `addDeployment`). */
  deployments?: DeploymentConfig[];
  /** Heartbeat interval told to workers at registration (default 5000 ms). */
  heartbeatIntervalMs?: number;
  /** Consecutive failed attempts before a worker is ejected from routing (default 3). */
  ejectAfterFailures?: number;
  /** How long an ejected worker stays out of routing (default 10000 ms). */
  ejectCooldownMs?: number;
  /** Gone workers are kept this long for status views (default 600000 ms). */
  goneRetentionMs?: number;
  /** Size of the ring buffer of recent events (default 1000). */
  eventBufferSize?: number;
  /** Clock (default `Date.now`). */
  now?: () => number;
  /**
   * The key a worker's engine front requires (`deriveEngineKey(secret, jobId)`): the proxy
   * sends it to that worker only. Undefined: the deployment's `upstreamApiKey`, if any.
   */
  upstreamKey?: (worker: { deployment: string; jobId: string }) => string | undefined;
}

/** A listener of lifecycle events. Exceptions it throws are swallowed. */
export type PoolEventListener = (event: PoolEvent) => void;

/**
 * The registry of deployments, node jobs and workers: the one object that plays every
 * registry role. Hand each consumer only its role: the proxy a `PoolView`, the worker API
 * a `WorkerLedger`, the reconciler a `JobLedger`, a `DeploymentCatalog` and a
 * `PoolEventLog`, status views a `PoolEventFeed` (see roles.ts).
 */
export interface Registry
  extends
    PoolView,
    ControlPlaneRouting,
    DataPlaneAccounting,
    WorkerLedger,
    JobLedger,
    DeploymentCatalog,
    PoolEventLog {
  /** Heartbeat interval told to workers. */
  readonly heartbeatIntervalMs: number;
  /**
   * Workers that stop serving without finishing their requests: unready (liveness),
   * failed, gone without a drain, and draining workers handed over (reason `hand-over: ...`).
   */
  onWorkerLost(listener: (workerId: string, reason: string) => void): () => void;
  /** Every entry into and exit from a routable set, with its reason (see `PoolView`). */
  onRoutingChange(listener: (change: RoutingChange) => void): () => void;
  /** Every change of a deployment's view (see `ControlPlaneRouting`). */
  onDeploymentChange(listener: (deployment: string) => void): () => void;
}

/**
 * Create the registry.
 * @example
 * const registry = createRegistry({
 *   deployments: [{ name: 'qwen', model: 'Qwen/Qwen3-32B', engine: 'vllm',
 *     tensorParallelSize: 4, gpusPerNode: 8, maxNodes: 2 }],
 * });
 * const workers = registry.routable('qwen');
 */
export function createRegistry(options: RegistryOptions = {}): Registry {
  const now = options.now ?? Date.now;
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const store: RegistryStore = { now, jobs: new Map(), workers: new Map() };
  const events = createEventLog(Math.max(1, options.eventBufferSize ?? 1000), now);
  const routing = createRouting(store, {
    emit: events.emit,
    ejectAfter: options.ejectAfterFailures ?? 3,
    ejectCooldownMs: options.ejectCooldownMs ?? 10_000,
  });
  const lifecycle = createLifecycle(store, routing, events.emit);
  const workerLedger = createWorkerLedger(store, routing, lifecycle, {
    emit: events.emit,
    heartbeatIntervalMs,
    upstreamKey: options.upstreamKey,
  });
  const jobLedger = createJobLedger(store, routing, lifecycle, options.goneRetentionMs ?? 600_000);

  const registry: Registry = {
    heartbeatIntervalMs,

    addDeployment: routing.addDeployment,
    deploymentConfig: routing.deploymentConfig,
    deploymentConfigs: routing.deploymentConfigs,
    setDeploymentExpectedReady: routing.setDeploymentExpectedReady,

    deployments: routing.deployments,
    resolveModel: routing.resolveModel,
    routable: routing.routable,
    waitForRoutable: routing.waitForRoutable,
    reportOutcome: routing.reportOutcome,
    onRoutingChange: routing.onRoutingChange,
    controlRoutable: routing.controlRoutable,
    recordServed: routing.recordServed,
    recordDataPlaneInFlight: routing.recordDataPlaneInFlight,
    onControlRoutingChange: routing.onControlRoutingChange,
    onDeploymentChange: routing.onDeploymentChange,
    onWorkerLost: lifecycle.onWorkerLost,

    register: workerLedger.register,
    heartbeat: workerLedger.heartbeat,
    drain: workerLedger.drain,
    deregister: workerLedger.deregister,
    handOver: workerLedger.handOver,

    noteIncarnation: jobLedger.noteIncarnation,
    endJob: jobLedger.endJob,
    drainJob: jobLedger.drainJob,
    drainWorker: jobLedger.drainWorker,
    markGone: jobLedger.markGone,
    forgetJob: jobLedger.forgetJob,
    worker: jobLedger.worker,
    workers: jobLedger.workers,
    silentWorkers: jobLedger.silentWorkers,
    job: jobLedger.job,
    snapshot: jobLedger.snapshot,

    emit: events.emit,
    on: events.on,
    recentEvents: events.recentEvents,
  };

  for (const config of options.deployments ?? []) registry.addDeployment(config);
  return registry;
}
