import type {
  AttemptOutcome,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingPolicy,
} from '@es/pool';

/** A hand-built PoolView for tests: workers are added and removed by the test. */
export interface StaticPool extends PoolView {
  add(worker: Omit<RoutableWorker, 'inFlight'>): RoutableWorker;
  remove(workerId: string): void;
  /** Remove a worker as lost (liveness failed, gone): `onWorkerLost` listeners are told. */
  lose(workerId: string, reason: string): void;
  outcomes: { workerId: string; outcome: AttemptOutcome }[];
  all(): RoutableWorker[];
}

export function deploymentView(
  name: string,
  routing: RoutingPolicy = 'least-outstanding',
  extra: Partial<DeploymentView> = {},
): DeploymentView {
  return {
    name,
    modelNames: [name, `/models/${name}`],
    model: `/models/${name}`,
    engine: 'mock',
    routing,
    ...extra,
  };
}

export function createStaticPool(deployments: DeploymentView[]): StaticPool {
  const workers = new Map<string, RoutableWorker[]>();
  const waiters = new Set<{ deployment: string; resolve: (ready: boolean) => void }>();
  const outcomes: StaticPool['outcomes'] = [];
  const lostListeners = new Set<(workerId: string, reason: string) => void>();
  const remove = (workerId: string) => {
    for (const [deployment, list] of workers) {
      workers.set(
        deployment,
        list.filter((w) => w.id !== workerId),
      );
    }
  };
  return {
    outcomes,
    deployments: () => deployments,
    resolveModel: (model) => deployments.find((d) => d.modelNames.includes(model)),
    routable: (deployment) => workers.get(deployment) ?? [],
    waitForRoutable(deployment, signal) {
      if ((workers.get(deployment) ?? []).length > 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const waiter = {
          deployment,
          resolve: (ready: boolean) => {
            waiters.delete(waiter);
            resolve(ready);
          },
        };
        waiters.add(waiter);
        signal.addEventListener('abort', () => waiter.resolve(false), { once: true });
      });
    },
    reportOutcome(workerId, outcome) {
      outcomes.push({ workerId, outcome });
    },
    add(spec) {
      const worker: RoutableWorker = { ...spec, inFlight: 0 };
      // A new array each change, as a registry would publish it.
      workers.set(spec.deployment, [...(workers.get(spec.deployment) ?? []), worker]);
      for (const waiter of [...waiters]) {
        if (waiter.deployment === spec.deployment) waiter.resolve(true);
      }
      return worker;
    },
    remove,
    lose(workerId, reason) {
      remove(workerId);
      for (const listener of [...lostListeners]) listener(workerId, reason);
    },
    onWorkerLost(listener) {
      lostListeners.add(listener);
      return () => lostListeners.delete(listener);
    },
    all: () => [...workers.values()].flat(),
  };
}
