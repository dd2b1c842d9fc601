/**
 * Reading a successful list: the tick's bookkeeping, the listed jobs of our deployments,
 * the submissions the list resolves, and the registry indexed by job.
 */
import type { DeploymentConfig } from '../deployment.js';
import { jobNameFor } from '../deployment.js';
import type { ObservedJob } from '../provider.js';
import type { WorkerInfo } from '../registry.js';
import { listedTick, type ListedJob, type ListedTick, type Tick } from './tick.js';

/** The list phase: turns the tick into a {@link ListedTick} for the phases after it. */
export function readList(tick: Tick, list: readonly ObservedJob[]): ListedTick {
  const { input, next, options } = tick;
  const firstList = next.lastListAt === undefined;
  next.listFailures = 0;
  next.lastListAt = input.observedAt;
  next.timedOut = {};

  const byName = new Map<string, DeploymentConfig>();
  for (const d of input.deployments) byName.set(jobNameFor(options.schedulerId, d.name), d);
  const observed = new Map<string, ListedJob>();
  const tagsSeen = new Set<string>();
  for (const job of list) {
    const d = byName.get(job.name);
    if (d === undefined) continue;
    observed.set(job.id, { ...job, deployment: d.name });
    if (job.tag) tagsSeen.add(job.tag);
  }

  // Submissions are resolved by the first list that started after they settled.
  for (const [tag, sub] of Object.entries(next.submissions)) {
    const seen = tagsSeen.has(tag) || (sub.jobId !== undefined && observed.has(sub.jobId));
    const settledBefore = sub.settledAt !== undefined && sub.settledAt < input.observedAt;
    if (seen || settledBefore) delete next.submissions[tag];
  }

  const workersByJob = new Map<string, WorkerInfo[]>();
  for (const w of input.registry.workers) {
    let workers = workersByJob.get(w.jobId);
    if (workers === undefined) workersByJob.set(w.jobId, (workers = []));
    workers.push(w);
  }
  const registryJobs = new Map(input.registry.jobs.map((j) => [j.jobId, j]));
  return listedTick(tick, { observed, firstList, workersByJob, registryJobs });
}
