import type { RoutableWorker, RoutingPolicy } from '@es/pool';

/** Virtual nodes per worker on the affinity ring: enough for an even spread of keys. */
const VNODES = 64;

/**
 * 32-bit FNV-1a over UTF-16 code units, finished with murmur3's fmix32 so that similar
 * strings (`w1#0`, `w1#1`) land far apart on the ring.
 */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Engine-reported queue depth: the tie-breaker after the proxy's own in-flight count. */
function engineLoad(worker: RoutableWorker): number {
  const load = worker.load;
  return load === undefined ? 0 : load.running + load.waiting + (load.kvCacheUsage ?? 0);
}

function lessLoaded(a: RoutableWorker, b: RoutableWorker): RoutableWorker {
  if (a.inFlight !== b.inFlight) return a.inFlight < b.inFlight ? a : b;
  return engineLoad(b) < engineLoad(a) ? b : a;
}

/**
 * Least outstanding requests with power-of-two choices: two distinct random workers, the
 * less loaded wins. Avoids the herd a global minimum causes when many requests arrive at
 * once, at O(1) per request.
 */
export function pickLeastOutstanding(
  workers: readonly RoutableWorker[],
  random: () => number = Math.random,
): RoutableWorker | undefined {
  const n = workers.length;
  if (n <= 1) return workers[0];
  const i = Math.floor(random() * n);
  let j = Math.floor(random() * (n - 1));
  if (j >= i) j++;
  return lessLoaded(workers[i]!, workers[j]!);
}

interface Ring {
  /** Sorted hash positions. */
  points: Uint32Array;
  /** Index into `workers` for each point. */
  owners: Uint32Array;
  workers: readonly RoutableWorker[];
  signature: string;
}

function buildRing(workers: readonly RoutableWorker[], signature: string): Ring {
  const entries: [number, number][] = [];
  workers.forEach((worker, index) => {
    for (let v = 0; v < VNODES; v++) entries.push([hashString(`${worker.id}#${v}`), index]);
  });
  entries.sort((a, b) => a[0] - b[0]);
  return {
    points: Uint32Array.from(entries, (e) => e[0]),
    owners: Uint32Array.from(entries, (e) => e[1]),
    workers,
    signature,
  };
}

function lowerBound(points: Uint32Array, value: number): number {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo === points.length ? 0 : lo;
}

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): the key's
 * position on a ring of worker points picks the first worker clockwise whose in-flight
 * count is below `ceil(loadFactor * (total + 1) / n)`. A worker that leaves only moves the
 * keys it owned; a worker over the bound spills to its ring successor, so one hot prefix
 * cannot pile onto one engine.
 */
function pickOnRing(
  ring: Ring,
  key: string,
  loadFactor: number,
  exclude: ReadonlySet<string> | undefined,
): RoutableWorker | undefined {
  const workers = ring.workers;
  const n = workers.length;
  let total = 0;
  for (const worker of workers) total += worker.inFlight;
  const bound = Math.ceil((loadFactor * (total + 1)) / n);
  const start = lowerBound(ring.points, hashString(key));
  const seen = new Uint8Array(n);
  let distinct = 0;
  for (let k = 0; k < ring.points.length && distinct < n; k++) {
    const owner = ring.owners[(start + k) % ring.points.length]!;
    if (seen[owner] === 1) continue;
    seen[owner] = 1;
    distinct++;
    const worker = workers[owner]!;
    if (exclude !== undefined && exclude.has(worker.id)) continue;
    if (worker.inFlight < bound) return worker;
  }
  // Every eligible worker is at the bound: only possible when retries excluded the others.
  return undefined;
}

/** Picks workers for one deployment; keeps the policy's state (counter, ring). */
export interface DeploymentRouter {
  /**
   * A worker for the next attempt, never one in `exclude`; `affinityKey` is used by the
   * prefix-affinity policy only.
   */
  pick(
    policy: RoutingPolicy,
    workers: readonly RoutableWorker[],
    affinityKey: string | undefined,
    exclude: ReadonlySet<string> | undefined,
  ): RoutableWorker | undefined;
}

/** A router for one deployment. */
export function createDeploymentRouter(loadFactor: number): DeploymentRouter {
  let counter = 0;
  let ring: Ring | undefined;

  const ringFor = (workers: readonly RoutableWorker[]): Ring => {
    if (ring !== undefined && ring.workers === workers) return ring;
    let signature = '';
    for (const worker of workers) signature += `${worker.id}\n`;
    if (ring === undefined || ring.signature !== signature) ring = buildRing(workers, signature);
    // Same members, new array: keep the points, read in-flight counts from the new objects.
    else if (ring.workers !== workers) ring = { ...ring, workers };
    return ring;
  };

  return {
    pick(policy, all, affinityKey, exclude) {
      const workers =
        exclude === undefined || exclude.size === 0 ? all : all.filter((w) => !exclude.has(w.id));
      if (workers.length === 0) return undefined;
      switch (policy) {
        case 'round-robin':
          counter = (counter + 1) % 0x7fffffff;
          return workers[counter % workers.length];
        case 'prefix-affinity':
          if (affinityKey !== undefined) {
            // The ring is built over all routable workers so a retry's exclusions do not
            // reshuffle the key space; excluded workers are skipped while walking it.
            const chosen = pickOnRing(ringFor(all), affinityKey, loadFactor, exclude);
            if (chosen !== undefined) return chosen;
          }
          return pickLeastOutstanding(workers);
        default:
          return pickLeastOutstanding(workers);
      }
    },
  };
}
