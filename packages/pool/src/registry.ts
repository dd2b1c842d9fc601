import { formatWorkerId, type EngineKind, type EngineLoad } from '@es/protocol';
import type {
  AttemptOutcome,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingChange,
} from './view.js';
import { deploymentView, validateDeployment, type DeploymentConfig } from './deployment.js';
import { PoolError } from './errors.js';
import type { DeploymentCatalog, JobLedger, PoolEventLog, WorkerLedger } from './roles.js';

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
  | 'replaced'
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
  extends PoolView, WorkerLedger, JobLedger, DeploymentCatalog, PoolEventLog {
  /** Heartbeat interval told to workers. */
  readonly heartbeatIntervalMs: number;
  /**
   * Workers that stop serving without finishing their requests: unready (liveness),
   * failed, gone without a drain, and draining workers handed over (reason `hand-over: ...`).
   */
  onWorkerLost(listener: (workerId: string, reason: string) => void): () => void;
  /** Every entry into and exit from a routable set, with its reason (see `PoolView`). */
  onRoutingChange(listener: (change: RoutingChange) => void): () => void;
}

interface WorkerRecord {
  id: string;
  deployment: string;
  jobId: string;
  restartCount: number;
  index: number;
  host: string;
  port: number;
  node: string;
  gpus: number[];
  engine: EngineKind;
  model: string;
  state: WorkerState;
  reason: string | undefined;
  registeredAt: number;
  lastHeartbeat: number;
  goneAt: number | undefined;
  requestsServed: number;
  failures: number;
  ejectedUntil: number | undefined;
  logFile: string | undefined;
  pid: number | undefined;
  /** When its hand-over was announced (once per record). */
  handedOverAt: number | undefined;
  /** The object the proxy holds: stable for the worker's life so `inFlight` accumulates. */
  routable: RoutableWorker;
}

interface JobRecord {
  jobId: string;
  deployment: string;
  restartCount: number;
  registeredAt: number | undefined;
  endedIncarnation: number | undefined;
  workers: Set<string>;
}

interface DeploymentRecord {
  config: DeploymentConfig;
  view: DeploymentView;
  workers: Set<string>;
  /** Published array; replaced (never mutated) on every change so callers may hold it. */
  routable: readonly RoutableWorker[];
  waiters: Set<(ready: boolean) => void>;
}

const EMPTY: readonly RoutableWorker[] = Object.freeze([]);

function baseUrlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
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
  const ejectAfter = options.ejectAfterFailures ?? 3;
  const ejectCooldownMs = options.ejectCooldownMs ?? 10_000;
  const goneRetentionMs = options.goneRetentionMs ?? 600_000;
  const bufferSize = Math.max(1, options.eventBufferSize ?? 1000);

  const upstreamKeyOf = (deployment: string, jobId: string): { upstreamKey?: string } => {
    const key = options.upstreamKey?.({ deployment, jobId });
    return key === undefined ? {} : { upstreamKey: key };
  };
  const deployments = new Map<string, DeploymentRecord>();
  const views: DeploymentView[] = [];
  const modelIndex = new Map<string, DeploymentView>();
  const jobs = new Map<string, JobRecord>();
  const workers = new Map<string, WorkerRecord>();
  const listeners = new Set<PoolEventListener>();
  const ring: PoolEvent[] = [];
  let ringStart = 0;

  function emit(input: Omit<PoolEvent, 'at'> & { at?: number }): void {
    const event: PoolEvent = { ...input, at: input.at ?? now() };
    if (ring.length < bufferSize) ring.push(event);
    else {
      ring[ringStart] = event;
      ringStart = (ringStart + 1) % bufferSize;
    }
    for (const listener of listeners) {
      try {
        listener(event);
      } catch {
        // A faulty listener must not break the worker protocol or the reconciler.
      }
    }
  }

  function rebuildViews(): void {
    views.length = 0;
    modelIndex.clear();
    for (const record of deployments.values()) views.push(record.view);
    for (const view of views) {
      for (const name of view.modelNames) if (!modelIndex.has(name)) modelIndex.set(name, view);
    }
  }

  function isRoutable(w: WorkerRecord, at: number): boolean {
    return w.state === 'ready' && (w.ejectedUntil === undefined || w.ejectedUntil <= at);
  }

  const routingListeners = new Set<(change: RoutingChange) => void>();

  /** Why a worker is out of routing, for the routing-change record. */
  function outReason(w: WorkerRecord | undefined, at: number): string {
    if (w === undefined) return 'forgotten';
    if (w.state === 'ready' && w.ejectedUntil !== undefined && w.ejectedUntil > at) {
      return `ejected until ${new Date(w.ejectedUntil).toISOString()}`;
    }
    const state = w.state === 'loading' ? 'unready' : w.state;
    return w.reason === undefined ? state : `${state}: ${w.reason}`;
  }

  /**
   * Rebuild a deployment's routable set, the only place it changes; tell routing listeners
   * what entered and left (`why` overrides the reason derived from the worker's state).
   */
  function republish(deployment: string, why?: string): void {
    const record = deployments.get(deployment);
    if (record === undefined) return;
    const at = now();
    const list: RoutableWorker[] = [];
    for (const id of record.workers) {
      const w = workers.get(id);
      if (w !== undefined && isRoutable(w, at)) {
        if (w.ejectedUntil !== undefined) w.ejectedUntil = undefined;
        list.push(w.routable);
      }
    }
    const before = record.routable;
    record.routable = list.length === 0 ? EMPTY : list;
    if (routingListeners.size > 0) notifyRouting(deployment, before, record.routable, at, why);
    if (list.length > 0 && record.waiters.size > 0) {
      const waiters = [...record.waiters];
      record.waiters.clear();
      for (const resolve of waiters) resolve(true);
    }
  }

  function notifyRouting(
    deployment: string,
    before: readonly RoutableWorker[],
    after: readonly RoutableWorker[],
    at: number,
    why: string | undefined,
  ): void {
    // Identity of the routable object, not the id: a re-registered worker is a new object.
    const changes: RoutingChange[] = [];
    const kept = new Set(after);
    for (const r of before) {
      if (!kept.has(r)) {
        const w = workers.get(r.id);
        const reason =
          why ?? (w !== undefined && w.routable !== r ? 'registered again' : outReason(w, at));
        changes.push({ deployment, workerId: r.id, routable: false, reason });
      }
    }
    const old = new Set(before);
    for (const r of after) {
      if (!old.has(r))
        changes.push({ deployment, workerId: r.id, routable: true, reason: 'ready' });
    }
    for (const change of changes) {
      for (const listener of [...routingListeners]) {
        try {
          listener(change);
        } catch {
          // A listener's failure must not break the registry.
        }
      }
    }
  }

  function jobRecord(jobId: string, deployment: string): JobRecord {
    let job = jobs.get(jobId);
    if (job === undefined) {
      job = {
        jobId,
        deployment,
        restartCount: 0,
        registeredAt: undefined,
        endedIncarnation: undefined,
        workers: new Set(),
      };
      jobs.set(jobId, job);
    }
    return job;
  }

  const lostListeners = new Set<(workerId: string, reason: string) => void>();

  function announceLost(workerId: string, reason: string): void {
    for (const listener of [...lostListeners]) {
      try {
        listener(workerId, reason);
      } catch {
        // A listener's failure must not break the registry.
      }
    }
  }

  function setState(w: WorkerRecord, state: WorkerState, reason?: string): void {
    if (w.state === state) return;
    const wasRoutable = w.state === 'ready';
    // A draining worker's in-flight requests are let finish (preemption grace, scancel).
    const wasDraining = w.state === 'draining';
    w.state = state;
    if (reason !== undefined) w.reason = reason;
    if (state === 'gone' || state === 'failed') w.goneAt = now();
    if (wasRoutable || state === 'ready') republish(w.deployment);
    const event: Omit<PoolEvent, 'at'> = { type: 'registered', deployment: w.deployment };
    event.jobId = w.jobId;
    event.workerId = w.id;
    if (reason !== undefined) event.reason = reason;
    if (state === 'ready' || state === 'draining' || state === 'gone' || state === 'failed') {
      emit({ ...event, type: state });
    } else if (wasRoutable && state === 'loading') emit({ ...event, type: 'unready' });
    const lost = state === 'gone' || state === 'failed' || (wasRoutable && state === 'loading');
    if (lost && !wasDraining) announceLost(w.id, reason ?? state);
  }

  function retire(w: WorkerRecord, state: 'gone' | 'failed', reason: string): void {
    if (w.state === 'gone' || w.state === 'failed') return;
    setState(w, state, reason);
  }

  /** A scheduler-initiated drain: workers still starting, loading or ready start draining. */
  function drainInService(w: WorkerRecord | undefined, reason: string): void {
    if (
      w !== undefined &&
      (w.state === 'ready' || w.state === 'loading' || w.state === 'starting')
    ) {
      setState(w, 'draining', reason);
    }
  }

  function fencedMessage(job: JobRecord, restartCount: number): string | undefined {
    if (restartCount < job.restartCount) {
      return `job ${job.jobId} has a newer incarnation (restart count ${job.restartCount} > ${restartCount}): exit`;
    }
    if (job.endedIncarnation !== undefined && restartCount <= job.endedIncarnation) {
      return `job ${job.jobId} incarnation ${restartCount} has ended: exit`;
    }
    return undefined;
  }

  /** Moves the job to a newer incarnation: every older worker leaves service. */
  function advance(job: JobRecord, restartCount: number, why: string): void {
    if (restartCount <= job.restartCount) return;
    job.restartCount = restartCount;
    job.registeredAt = undefined;
    for (const id of job.workers) {
      const w = workers.get(id);
      if (w !== undefined && w.restartCount < restartCount) retire(w, 'gone', why);
    }
  }

  function getWorker(workerId: string, restartCount?: number): WorkerRecord {
    const w = workers.get(workerId);
    if (w !== undefined) {
      const job = jobs.get(w.jobId);
      const fenced = job && fencedMessage(job, restartCount ?? w.restartCount);
      if (fenced !== undefined) {
        throw new PoolError('fenced', fenced, { jobId: w.jobId, workerId, param: 'restartCount' });
      }
      if (w.state !== 'gone') return w;
    } else if (restartCount !== undefined) {
      // A worker id is `<jobId>.<restart>.<index>`: fence an old incarnation even when the
      // registry no longer holds that worker, so it exits instead of re-registering.
      const jobId = workerId.split('.').slice(0, -2).join('.');
      const job = jobs.get(jobId);
      const fenced = job && fencedMessage(job, restartCount);
      if (fenced !== undefined) {
        throw new PoolError('fenced', fenced, { jobId, workerId, param: 'restartCount' });
      }
    }
    throw new PoolError('unknown_worker', `worker ${workerId} is not registered: register again`, {
      workerId,
    });
  }

  const registry: Registry = {
    heartbeatIntervalMs,

    addDeployment(config) {
      validateDeployment(config);
      const existing = deployments.get(config.name);
      if (existing !== undefined) {
        existing.config = config;
        existing.view = deploymentView(config);
      } else {
        deployments.set(config.name, {
          config,
          view: deploymentView(config),
          workers: new Set(),
          routable: EMPTY,
          waiters: new Set(),
        });
      }
      rebuildViews();
    },

    deploymentConfig: (name) => deployments.get(name)?.config,
    deploymentConfigs: () => [...deployments.values()].map((d) => d.config),

    deployments: () => views,
    resolveModel: (model) => modelIndex.get(model),
    routable: (deployment) => deployments.get(deployment)?.routable ?? EMPTY,

    waitForRoutable(deployment, signal) {
      const record = deployments.get(deployment);
      if (record === undefined || signal.aborted) return Promise.resolve(false);
      if (record.routable.length > 0) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const onAbort = () => {
          record.waiters.delete(settle);
          resolve(false);
        };
        const settle = (ready: boolean) => {
          signal.removeEventListener('abort', onAbort);
          resolve(ready);
        };
        record.waiters.add(settle);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    },

    onWorkerLost(listener) {
      lostListeners.add(listener);
      return () => lostListeners.delete(listener);
    },

    onRoutingChange(listener) {
      routingListeners.add(listener);
      return () => routingListeners.delete(listener);
    },

    reportOutcome(workerId, outcome: AttemptOutcome) {
      const w = workers.get(workerId);
      if (w === undefined) return;
      if (outcome === 'success') {
        w.failures = 0;
        w.requestsServed++;
        return;
      }
      w.failures++;
      if (w.failures < ejectAfter || w.state !== 'ready' || w.ejectedUntil !== undefined) return;
      const record = deployments.get(w.deployment);
      // Never eject the last routable worker: with nowhere else to go, a failing worker is
      // still better than a queue that waits for the cool-down.
      if (record === undefined || record.routable.length <= 1) return;
      w.ejectedUntil = now() + ejectCooldownMs;
      w.failures = 0;
      const reason = `ejected for ${ejectCooldownMs} ms after ${ejectAfter} failed attempts (${outcome})`;
      republish(w.deployment, `unready: ${reason}`);
      // Out of routing for the cool-down only: `unready`, not a drain (it comes back).
      emit({ type: 'unready', deployment: w.deployment, jobId: w.jobId, workerId, reason });
    },

    register(request) {
      const record = deployments.get(request.deployment);
      if (record === undefined) {
        throw new PoolError(
          'unknown_deployment',
          `deployment ${request.deployment} is not served by this scheduler`,
          { param: 'deployment', jobId: request.jobId },
        );
      }
      const job = jobRecord(request.jobId, request.deployment);
      const fenced = fencedMessage(job, request.restartCount);
      if (fenced !== undefined) {
        throw new PoolError('fenced', fenced, { jobId: request.jobId, param: 'restartCount' });
      }
      advance(job, request.restartCount, `replaced by incarnation ${request.restartCount}`);
      const id = formatWorkerId(request.jobId, request.restartCount, request.index);
      const at = now();
      const previous = workers.get(id);
      if (previous !== undefined) {
        // Re-registration (scheduler restart, or a 404 after a heartbeat timeout): keep the
        // counters but let the new address and state win.
        previous.state = 'gone';
        republish(previous.deployment, 'registered again');
      }
      const state: WorkerState =
        request.state === 'ready'
          ? 'ready'
          : request.state === 'draining'
            ? 'draining'
            : request.state === 'failed'
              ? 'failed'
              : 'starting';
      const w: WorkerRecord = {
        id,
        deployment: request.deployment,
        jobId: request.jobId,
        restartCount: request.restartCount,
        index: request.index,
        host: request.host,
        port: request.port,
        node: request.node,
        gpus: [...request.gpus],
        engine: request.engine,
        model: request.model,
        state: 'starting',
        reason: undefined,
        registeredAt: at,
        lastHeartbeat: at,
        goneAt: undefined,
        requestsServed: previous?.requestsServed ?? 0,
        failures: 0,
        ejectedUntil: undefined,
        logFile: request.logFile,
        pid: request.pid,
        handedOverAt: undefined,
        routable: {
          id,
          deployment: request.deployment,
          baseUrl: baseUrlOf(request.host, request.port),
          ...upstreamKeyOf(request.deployment, request.jobId),
          // Requests still running on the previous record decrement that object, not this one.
          inFlight: 0,
        },
      };
      workers.set(id, w);
      job.workers.add(id);
      record.workers.add(id);
      job.registeredAt ??= at;
      emit({
        type: 'registered',
        deployment: w.deployment,
        jobId: w.jobId,
        workerId: id,
        reason: `${w.node} ${w.routable.baseUrl} gpus ${w.gpus.join(',')}`,
      });
      if (state !== 'starting') setState(w, state);
      return { workerId: id, heartbeatIntervalMs };
    },

    heartbeat(workerId, request) {
      const w = getWorker(workerId, request.restartCount);
      w.lastHeartbeat = now();
      if (request.load !== undefined) w.routable.load = request.load;
      if (w.ejectedUntil !== undefined && w.ejectedUntil <= w.lastHeartbeat)
        republish(w.deployment);
      // Draining and failed are sticky: a worker that announced either is on its way out.
      if (w.state === 'draining' || w.state === 'failed') return;
      switch (request.state) {
        case 'ready':
          if (w.state === 'loading') delete w.reason;
          setState(w, 'ready');
          break;
        case 'loading':
          // Also a ready engine that stopped answering its liveness probes: out of routing.
          setState(w, 'loading', request.reason);
          break;
        case 'draining':
          setState(w, 'draining', request.reason ?? 'worker draining');
          break;
        case 'failed':
          setState(w, 'failed', request.reason ?? 'engine failed');
          break;
      }
    },

    drain(workerId, reason) {
      const w = getWorker(workerId);
      if (w.state === 'failed') return;
      setState(w, 'draining', reason);
    },

    deregister(workerId, reason) {
      const w = getWorker(workerId);
      retire(w, 'gone', reason);
    },

    handOver(workerIds, reason, stopInMs) {
      const known = workerIds.flatMap((id) => {
        const w = workers.get(id);
        return w === undefined ? [] : [w];
      });
      if (known.length === 0) {
        throw new PoolError(
          'unknown_worker',
          `none of the workers ${workerIds.join(', ')} is registered`,
          { workerId: workerIds[0] },
        );
      }
      const why = `${reason} (engines stop in ${Math.round(stopInMs)} ms)`;
      for (const w of known) {
        if (w.handedOverAt !== undefined) continue;
        w.handedOverAt = now();
        // Its drain notice may have been lost: out of routing first, as a drain.
        if (w.state === 'ready' || w.state === 'loading' || w.state === 'starting') {
          setState(w, 'draining', reason);
        }
        emit({
          type: 'hand-over',
          deployment: w.deployment,
          jobId: w.jobId,
          workerId: w.id,
          reason: why,
        });
        announceLost(w.id, `hand-over: ${why}`);
      }
      return known.map((w) => w.id);
    },

    noteIncarnation(jobId, deployment, restartCount) {
      const job = jobRecord(jobId, deployment);
      advance(job, restartCount, `job requeued (restart count ${restartCount})`);
    },

    endJob(jobId, reason, restartCount) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      const upTo = restartCount ?? job.restartCount;
      job.endedIncarnation = Math.max(job.endedIncarnation ?? -1, upTo);
      for (const id of job.workers) {
        const w = workers.get(id);
        if (w !== undefined && w.restartCount <= upTo) retire(w, 'gone', reason);
      }
    },

    drainJob(jobId, reason) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      for (const id of job.workers) drainInService(workers.get(id), reason);
    },

    drainWorker(workerId, reason) {
      drainInService(workers.get(workerId), reason);
    },

    markGone(workerId, reason) {
      const w = workers.get(workerId);
      if (w !== undefined) retire(w, 'gone', reason);
    },

    forgetJob(jobId) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      for (const id of job.workers) {
        const w = workers.get(id);
        if (w === undefined) continue;
        retire(w, 'gone', 'job left the cluster');
        workers.delete(id);
        deployments.get(w.deployment)?.workers.delete(id);
      }
      jobs.delete(jobId);
    },

    worker(workerId) {
      const w = workers.get(workerId);
      return w === undefined ? undefined : workerInfo(w);
    },

    workers(deployment) {
      const out: WorkerInfo[] = [];
      for (const w of workers.values()) {
        if (deployment === undefined || w.deployment === deployment) out.push(workerInfo(w));
      }
      return out;
    },

    silentWorkers(before) {
      const out: WorkerInfo[] = [];
      for (const w of workers.values()) {
        if (w.lastHeartbeat < before && w.state !== 'gone' && w.state !== 'failed') {
          out.push(workerInfo(w));
        }
      }
      return out;
    },

    job(jobId) {
      const job = jobs.get(jobId);
      return job === undefined ? undefined : jobInfo(job);
    },

    snapshot() {
      const cutoff = now() - goneRetentionMs;
      for (const [id, w] of workers) {
        if (w.goneAt !== undefined && w.goneAt < cutoff) {
          workers.delete(id);
          jobs.get(w.jobId)?.workers.delete(id);
          deployments.get(w.deployment)?.workers.delete(id);
        }
      }
      return {
        jobs: [...jobs.values()].map(jobInfo),
        workers: [...workers.values()].map(workerInfo),
      };
    },

    emit,

    on(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    recentEvents(limit = bufferSize) {
      const ordered =
        ring.length < bufferSize ? ring : [...ring.slice(ringStart), ...ring.slice(0, ringStart)];
      return ordered.slice(Math.max(0, ordered.length - limit));
    },
  };

  for (const config of options.deployments ?? []) registry.addDeployment(config);
  return registry;
}

function workerInfo(w: WorkerRecord): WorkerInfo {
  const info: WorkerInfo = {
    id: w.id,
    deployment: w.deployment,
    jobId: w.jobId,
    restartCount: w.restartCount,
    index: w.index,
    host: w.host,
    port: w.port,
    baseUrl: w.routable.baseUrl,
    node: w.node,
    gpus: [...w.gpus],
    engine: w.engine,
    model: w.model,
    state: w.state,
    registeredAt: w.registeredAt,
    lastHeartbeat: w.lastHeartbeat,
    inFlight: w.routable.inFlight,
    requestsServed: w.requestsServed,
  };
  if (w.reason !== undefined) info.reason = w.reason;
  if (w.routable.load !== undefined) info.load = { ...w.routable.load };
  if (w.ejectedUntil !== undefined) info.ejectedUntil = w.ejectedUntil;
  if (w.logFile !== undefined) info.logFile = w.logFile;
  if (w.pid !== undefined) info.pid = w.pid;
  return info;
}

function jobInfo(job: JobRecord): JobInfo {
  const info: JobInfo = {
    jobId: job.jobId,
    deployment: job.deployment,
    restartCount: job.restartCount,
    workerIds: [...job.workers],
  };
  if (job.registeredAt !== undefined) info.registeredAt = job.registeredAt;
  if (job.endedIncarnation !== undefined) info.endedIncarnation = job.endedIncarnation;
  return info;
}
