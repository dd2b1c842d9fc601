import type { PoolView, RoutableWorker } from '@es/pool';

/**
 * One line of the routing journal: every upstream attempt and every change of the routable
 * sets, in the order this process saw them. The reliability checker (`@es/chaos`) reads it to
 * judge, per attempt and with no tolerance, that no attempt went to a worker that had left
 * routing.
 */
export type RoutingJournalEntry =
  | {
      type: 'route';
      /** ms since epoch. */
      time: number;
      deployment: string;
      workerId: string;
      /** Entered (`true`) or left (`false`) the routable set. */
      routable: boolean;
      reason: string;
    }
  | {
      type: 'attempt';
      time: number;
      /** The request's `x-request-id`. */
      requestId: string;
      deployment: string;
      workerId: string;
      /** 1 for the first attempt of the request, 2 for its first retry, ... */
      attempt: number;
    };

/** Receives journal entries synchronously, in order; must not throw. */
export type RoutingJournal = (entry: RoutingJournalEntry) => void;

/**
 * Faults that can be planted in the proxy on purpose, so a reliability run proves that its
 * checks see them. Never set in production.
 */
export interface PlantedFaults {
  /**
   * Read each deployment's routable set at most once per this many ms: workers that left
   * routing (drained, unready, ejected, gone) keep receiving new requests for up to that long.
   */
  staleRoutingMs?: number;
  /**
   * End a stream whose worker failed mid-way without the SSE error event (the client sees
   * a stream that simply stops: a silent truncation).
   */
  silentStreamCut?: boolean;
  /**
   * Continue a cut generation as if nothing had been generated: the continuation's prompt
   * is the prompt alone and its `max_tokens` the client's, so the client's text repeats
   * what it already had (and the engines' request logs show a restart).
   */
  continueFromScratch?: boolean;
}

/** A `PoolView` whose `routable()` answers from a copy up to `maxAgeMs` old (a planted fault). */
export function withStaleRouting(pool: PoolView, maxAgeMs: number): PoolView {
  const cache = new Map<string, { at: number; workers: readonly RoutableWorker[] }>();
  return {
    deployments: () => pool.deployments(),
    resolveModel: (model) => pool.resolveModel(model),
    routable(deployment) {
      const now = performance.now();
      const hit = cache.get(deployment);
      if (hit !== undefined && now - hit.at < maxAgeMs) return hit.workers;
      const workers = pool.routable(deployment);
      cache.set(deployment, { at: now, workers });
      return workers;
    },
    waitForRoutable: (deployment, signal) => pool.waitForRoutable(deployment, signal),
    reportOutcome: (workerId, outcome) => pool.reportOutcome(workerId, outcome),
    ...(pool.onWorkerLost === undefined
      ? {}
      : { onWorkerLost: (listener) => pool.onWorkerLost!(listener) }),
  };
}
