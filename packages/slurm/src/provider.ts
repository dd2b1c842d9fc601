import type { NodeProvider, NodeRequest, ObservedJob } from '@es/pool';
import { createSlurmClient } from './client.js';
import type { SlurmClient, SlurmClientOptions } from './client.js';
import type { JobSpec } from './script.js';
import type { SlurmJob } from './squeue.js';

/** Options of {@link createSlurmProvider}: a client, or the options to create one. */
export interface SlurmProviderOptions extends SlurmClientOptions {
  /** Use this client instead of creating one from the other options. */
  client?: SlurmClient;
}

/** Maps a node request to a job spec (pure): tag → `--comment`, requeue on by default. */
export function nodeRequestToJobSpec(request: NodeRequest): JobSpec {
  // ClusterOptions' fields are JobSpec fields of the same name and meaning.
  const { requeue = true, ...cluster } = request.cluster ?? {};
  return {
    ...cluster,
    name: request.name,
    comment: request.tag,
    gpusPerNode: request.gpusPerNode,
    ...(request.timeLimitMinutes === undefined
      ? {}
      : { timeLimitMinutes: request.timeLimitMinutes }),
    requeue,
    logDir: request.logDir,
    env: request.env,
    command: request.command,
  };
}

function toObserved(job: SlurmJob): ObservedJob {
  const observed: ObservedJob = {
    id: job.id,
    name: job.name,
    tag: job.comment,
    state: job.state,
    reason: job.reason,
    nodes: job.nodes,
    restartCount: job.restartCount,
  };
  if (job.timeLeftSeconds !== undefined) observed.timeLeftSeconds = job.timeLeftSeconds;
  // squeue shows an expected start for pending jobs (a requeued job's begin time included).
  if (job.startTime !== undefined) {
    if (job.state === 'PENDING') observed.expectedStart = job.startTime;
    else observed.startTime = job.startTime;
  }
  if (job.submitTime !== undefined) observed.submitTime = job.submitTime;
  return observed;
}

/**
 * The `NodeProvider` of `@es/pool` for a SLURM cluster: one single-node job per node,
 * listed with one squeue call, cancelled with one scancel call and released from a
 * requeue's begin time with one scontrol call. Errors are
 * {@link SlurmError}s, which `classifyProviderError` understands.
 *
 * @example
 * const provider = createSlurmProvider({ env: { SLURM_CONF: '/etc/slurm/slurm.conf' } });
 * const id = await provider.submit(request);
 */
export function createSlurmProvider(options: SlurmProviderOptions = {}): NodeProvider {
  const client = options.client ?? createSlurmClient(options);
  return {
    kind: 'slurm',
    submit: (request) => client.submit(nodeRequestToJobSpec(request)),
    list: async (filter) => (await client.list({ names: filter.names })).map(toObserved),
    cancel: (ids) => client.cancel(ids),
    release: (ids) => client.release(ids),
  };
}
