/**
 * Routing views: the deployments served (configs, the proxy's `DeploymentView`s and the
 * model-name index) and each one's routable set, with and without passive ejections (the
 * control plane's set, which the watch stream serves), rebuilt in one place (`republish`)
 * that tells routing-change listeners what entered and left; the proxy's wait for a routable
 * worker, and passive ejection after repeated failed attempts.
 */
import type {
  AttemptOutcome,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingChange,
} from '../view.js';
import { deploymentView, validateDeployment, type DeploymentConfig } from '../deployment.js';
import type {
  ControlPlaneRouting,
  DataPlaneAccounting,
  DeploymentCatalog,
  PoolEventLog,
} from '../roles.js';
import type { RegistryStore, WorkerRecord } from './records.js';

interface DeploymentRecord {
  config: DeploymentConfig;
  view: DeploymentView;
  workers: Set<string>;
  /** Published array; replaced (never mutated) on every change so callers may hold it. */
  routable: readonly RoutableWorker[];
  /** The control plane's set: `routable` before this process's passive ejections. */
  control: readonly RoutableWorker[];
  waiters: Set<(ready: boolean) => void>;
}

const EMPTY: readonly RoutableWorker[] = Object.freeze([]);

/** What {@link createRouting} needs besides the store. */
export interface RoutingOptions {
  emit: PoolEventLog['emit'];
  /** Consecutive failed attempts before a worker is ejected from routing. */
  ejectAfter: number;
  /** How long an ejected worker stays out of routing. */
  ejectCooldownMs: number;
}

/** The deployments and their routable sets. */
export interface Routing
  extends
    DeploymentCatalog,
    ControlPlaneRouting,
    DataPlaneAccounting,
    Pick<
      PoolView,
      'deployments' | 'resolveModel' | 'routable' | 'waitForRoutable' | 'reportOutcome'
    > {
  onRoutingChange(listener: (change: RoutingChange) => void): () => void;
  onDeploymentChange(listener: (deployment: string) => void): () => void;
  /**
   * Rebuild a deployment's routable set, the only place it changes; tell routing listeners
   * what entered and left (`why` overrides the reason derived from the worker's state).
   */
  republish(deployment: string, why?: string): void;
  /** The ids of a served deployment's workers (the set itself), `undefined` if not served. */
  deploymentWorkers(deployment: string): Set<string> | undefined;
}

function isRoutable(w: WorkerRecord, at: number): boolean {
  return w.state === 'ready' && (w.ejectedUntil === undefined || w.ejectedUntil <= at);
}

/** Why a worker is out of routing, for the routing-change record. */
function outReason(w: WorkerRecord | undefined, at: number): string {
  if (w === undefined) return 'forgotten';
  if (w.state === 'ready' && w.ejectedUntil !== undefined && w.ejectedUntil > at) {
    return `ejected until ${new Date(w.ejectedUntil).toISOString()}`;
  }
  const state = w.state === 'loading' ? 'unready' : w.state;
  return w.reason === undefined ? state : `${state}: ${w.reason}`;
}

/** The routing views of a registry over `store`'s workers. */
export function createRouting(store: RegistryStore, options: RoutingOptions): Routing {
  const { now, workers } = store;
  const { emit, ejectAfter, ejectCooldownMs } = options;
  const deployments = new Map<string, DeploymentRecord>();
  // Replaced (never mutated) on every change: the watch stream tells a change by identity.
  let views: readonly DeploymentView[] = [];
  const modelIndex = new Map<string, DeploymentView>();
  const routingListeners = new Set<(change: RoutingChange) => void>();
  const controlListeners = new Set<(change: RoutingChange) => void>();
  const deploymentListeners = new Set<(deployment: string) => void>();

  function rebuildViews(changed: string): void {
    views = [...deployments.values()].map((record) => record.view);
    modelIndex.clear();
    for (const view of views) {
      for (const name of view.modelNames) if (!modelIndex.has(name)) modelIndex.set(name, view);
    }
    for (const listener of [...deploymentListeners]) {
      try {
        listener(changed);
      } catch {
        // A listener's failure must not break the registry.
      }
    }
  }

  function republish(deployment: string, why?: string): void {
    const record = deployments.get(deployment);
    if (record === undefined) return;
    const at = now();
    const list: RoutableWorker[] = [];
    const control: RoutableWorker[] = [];
    for (const id of record.workers) {
      const w = workers.get(id);
      if (w?.state !== 'ready') continue;
      control.push(w.routable);
      if (isRoutable(w, at)) {
        if (w.ejectedUntil !== undefined) w.ejectedUntil = undefined;
        list.push(w.routable);
      }
    }
    const before = record.routable;
    record.routable = list.length === 0 ? EMPTY : list;
    const controlBefore = record.control;
    record.control = control.length === 0 ? EMPTY : control;
    if (routingListeners.size > 0) {
      notifyRouting(routingListeners, deployment, before, record.routable, at, why);
    }
    // An ejection (or its end) changes this process's set only: no control-plane change.
    if (controlListeners.size > 0) {
      notifyRouting(controlListeners, deployment, controlBefore, record.control, at, why);
    }
    if (list.length > 0 && record.waiters.size > 0) {
      const waiters = [...record.waiters];
      record.waiters.clear();
      for (const resolve of waiters) resolve(true);
    }
  }

  function notifyRouting(
    listeners: Set<(change: RoutingChange) => void>,
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
      for (const listener of [...listeners]) {
        try {
          listener(change);
        } catch {
          // A listener's failure must not break the registry.
        }
      }
    }
  }

  return {
    republish,
    deploymentWorkers: (deployment) => deployments.get(deployment)?.workers,

    addDeployment(config) {
      validateDeployment(config);
      const existing = deployments.get(config.name);
      if (existing !== undefined) {
        const expectedReadyAt = existing.view.expectedReadyAt;
        existing.config = config;
        // A new config does not move the expected start of a node already on its way.
        existing.view = {
          ...deploymentView(config),
          ...(expectedReadyAt === undefined ? {} : { expectedReadyAt }),
        };
      } else {
        deployments.set(config.name, {
          config,
          view: deploymentView(config),
          workers: new Set(),
          routable: EMPTY,
          control: EMPTY,
          waiters: new Set(),
        });
      }
      rebuildViews(config.name);
    },

    setDeploymentExpectedReady(name, at) {
      const record = deployments.get(name);
      if (record === undefined || record.view.expectedReadyAt === at) return;
      const { expectedReadyAt: _previous, ...rest } = record.view;
      record.view = at === undefined ? rest : { ...rest, expectedReadyAt: at };
      rebuildViews(name);
    },

    deploymentConfig: (name) => deployments.get(name)?.config,
    deploymentConfigs: () => [...deployments.values()].map((d) => d.config),

    deployments: () => views,
    resolveModel: (model) => modelIndex.get(model),
    routable: (deployment) => deployments.get(deployment)?.routable ?? EMPTY,
    controlRoutable: (deployment) => deployments.get(deployment)?.control ?? EMPTY,

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

    onRoutingChange(listener) {
      routingListeners.add(listener);
      return () => routingListeners.delete(listener);
    },

    onControlRoutingChange(listener) {
      controlListeners.add(listener);
      return () => controlListeners.delete(listener);
    },

    onDeploymentChange(listener) {
      deploymentListeners.add(listener);
      return () => deploymentListeners.delete(listener);
    },

    recordServed(workerId, requests) {
      const w = workers.get(workerId);
      if (w !== undefined) w.requestsServed += requests;
    },
    recordDataPlaneInFlight(totals) {
      for (const w of workers.values()) w.dataPlaneInFlight = totals.get(w.id) ?? 0;
    },
    reportOutcome(workerId, outcome: AttemptOutcome) {
      const w = workers.get(workerId);
      if (w === undefined) return;
      if (outcome === 'draining') {
        // The worker drains (its front said so) before this registry heard of it: out of
        // routing now, even as the last routable worker; its drain notice or heartbeat
        // makes it `draining` here meanwhile. Not a failure.
        if (w.state !== 'ready' || (w.ejectedUntil ?? 0) > now()) return;
        w.ejectedUntil = now() + ejectCooldownMs;
        const reason = 'its engine front refuses new requests: the worker is draining';
        republish(w.deployment, `unready: ${reason}`);
        emit({ type: 'unready', deployment: w.deployment, jobId: w.jobId, workerId, reason });
        return;
      }
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
  };
}
