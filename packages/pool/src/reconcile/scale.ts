/**
 * The scale phase: for each deployment that scales with demand (`minNodes` below
 * `maxNodes`), one load sample per tick from the registry and the proxies' queues, and
 * `decideScale` sets the target the fill phase works to. A changed target is a `scaled`
 * event carrying the decision's inputs. A deployment that does not scale has no scale
 * state: its target is `maxNodes`.
 */
import { workersPerNode, type DeploymentConfig } from '../deployment.js';
import type { WorkerInfo } from '../registry.js';
import { decideScale, scalingPolicy, type LoadSample } from '../scaling.js';
import { heldJobs } from './fill.js';
import type { ListedTick } from './tick.js';

/** Whether a deployment scales with its load: `minNodes` set below `maxNodes`. */
export function scalesWithDemand(deployment: DeploymentConfig): boolean {
  return deployment.minNodes !== undefined && deployment.minNodes < deployment.maxNodes;
}

/**
 * One tick's load of a deployment (rule 1 of `../scaling.ts`): per worker in service, the
 * larger of the proxies' count in flight and its engine's running + waiting, plus the
 * requests queued in the proxies; the mean KV-cache use of the ready workers.
 */
export function loadSample(
  workers: readonly WorkerInfo[],
  queued: number,
  at: number,
): LoadSample & { readyNodes: number } {
  let load = queued;
  let kv = 0;
  let kvCount = 0;
  const readyJobs = new Set<string>();
  for (const w of workers) {
    if (w.state !== 'ready' && w.state !== 'draining') continue;
    const engine = w.load === undefined ? 0 : w.load.running + w.load.waiting;
    load += Math.max(w.inFlight, engine);
    if (w.state !== 'ready') continue;
    readyJobs.add(w.jobId);
    if (w.load?.kvCacheUsage !== undefined) {
      kv += w.load.kvCacheUsage;
      kvCount++;
    }
  }
  const sample: LoadSample & { readyNodes: number } = {
    at,
    load,
    queued,
    readyNodes: readyJobs.size,
  };
  if (kvCount > 0) sample.kvCacheUsage = kv / kvCount;
  return sample;
}

/**
 * Engine instances per node job: as the workers registered (a worker plans its slices from
 * the GPUs SLURM gave it, which under `wholeNodeGpus` may be more than `gpusPerNode`), the
 * most of any job; before any registered, `gpusPerNode / tensorParallelSize`.
 */
export function instancesPerNode(
  workers: readonly WorkerInfo[],
  deployment: DeploymentConfig,
): number {
  const perJob = new Map<string, number>();
  for (const w of workers) {
    if (w.state === 'gone' || w.state === 'failed') continue;
    perJob.set(w.jobId, (perJob.get(w.jobId) ?? 0) + 1);
  }
  return Math.max(0, ...perJob.values()) || workersPerNode(deployment);
}

/** The scale phase (before filling). */
export function scaleDeployments(tick: ListedTick): void {
  const { input, now, next } = tick;
  const seen = new Set<string>();
  for (const deployment of input.deployments) {
    const name = deployment.name;
    if (!scalesWithDemand(deployment)) continue;
    seen.add(name);
    const workers = input.registry.workers.filter((w) => w.deployment === name);
    const { readyNodes, ...sample } = loadSample(workers, input.queued?.[name] ?? 0, now);
    const held = heldJobs(tick, deployment);
    const policy = scalingPolicy(deployment.scaling);
    const decision = decideScale({
      now,
      minNodes: deployment.minNodes ?? deployment.maxNodes,
      maxNodes: deployment.maxNodes,
      workersPerNode: instancesPerNode(workers, deployment),
      readyNodes,
      policy,
      state: next.scaling[name],
      initialTarget: held.counted.length + held.pending.length,
      sample,
    });
    next.scaling[name] = decision.state;
    if (decision.change !== undefined) {
      const { from, to, why } = decision.change;
      tick.event('scaled', name, undefined, `${from} → ${to} node${to === 1 ? '' : 's'}: ${why}`);
    }
  }
  // A deployment that stopped scaling (or was removed) forgets its state: maxNodes rules.
  for (const name of Object.keys(next.scaling)) if (!seen.has(name)) delete next.scaling[name];
}
