/**
 * The seed's read endpoints, answering with the seed's field names so existing clients and
 * scripts keep working: `GET /health`, `GET /cluster_status`, `GET /workers`.
 */
import { Hono } from 'hono';
import type { DeploymentCatalog, WorkerDirectory, WorkerInfo } from '@es/pool';

/** What the seed endpoints read. */
export interface SeedStatusSource {
  /** The workers and the deployments' configs (the registry; nothing here changes them). */
  registry: WorkerDirectory & Pick<DeploymentCatalog, 'deploymentConfig' | 'deploymentConfigs'>;
  /** Jobs of each state the cluster last reported, over all deployments. */
  jobCounts(): { pending: number; running: number };
  /** Why a deployment is not growing, if it is not: a permanent error or a backoff. */
  deploymentNotes(): ReadonlyMap<string, DeploymentNote>;
}

/** What `/cluster_status` says about a deployment beyond the seed's fields. */
export interface DeploymentNote {
  permanentError?: string;
  backoff?: string;
  launchFailures?: string;
}

const seedStatus = (w: WorkerInfo): string =>
  w.state === 'ready'
    ? 'ready'
    : w.state === 'starting' || w.state === 'loading'
      ? 'loading'
      : 'offline';

const iso = (ms: number) => new Date(ms).toISOString();

function seedWorker(w: WorkerInfo, tp: number) {
  return {
    worker_id: w.id,
    hostname: w.node,
    ip_address: w.host,
    port: w.port,
    base_url: `${w.baseUrl}/v1`,
    status: seedStatus(w),
    engine: w.engine,
    model_name: w.model,
    n_gpus: w.gpus.length,
    tensor_parallel_size: tp,
    slurm_job_id: w.jobId,
    registered_at: iso(w.registeredAt),
    last_heartbeat: iso(w.lastHeartbeat),
    requests_served: w.requestsServed,
    // Beyond the seed: this implementation's own state names and details.
    state: w.state,
    gpus: w.gpus,
    in_flight: w.inFlight,
    load: w.load ?? null,
  };
}

/** Hono routes for the seed's status endpoints. */
export function createSeedRoutes(source: SeedStatusSource): Hono {
  const app = new Hono();
  const { registry } = source;
  const live = () => registry.workers().filter((w) => w.state !== 'gone');

  app.get('/health', (c) =>
    c.json({ status: 'ok', ready_workers: live().filter((w) => w.state === 'ready').length }),
  );

  app.get('/cluster_status', (c) => {
    const configs = registry.deploymentConfigs();
    const first = configs[0];
    const workers = live();
    const tpOf = (name: string) => registry.deploymentConfig(name)?.tensorParallelSize ?? 1;
    const jobs = source.jobCounts();
    return c.json({
      model: first?.model ?? '',
      engine: first?.engine ?? '',
      max_nodes: configs.reduce((n, d) => n + d.maxNodes, 0),
      tensor_parallel_size: first?.tensorParallelSize ?? 1,
      dp_per_node: first ? Math.floor(first.gpusPerNode / first.tensorParallelSize) : 0,
      total_nodes_active: new Set(workers.map((w) => w.jobId)).size,
      total_workers: workers.length,
      ready_workers: workers.filter((w) => seedStatus(w) === 'ready').length,
      loading_workers: workers.filter((w) => seedStatus(w) === 'loading').length,
      offline_workers: workers.filter((w) => seedStatus(w) === 'offline').length,
      pending_slurm_jobs: jobs.pending,
      workers: workers.map((w) => seedWorker(w, tpOf(w.deployment))),
      deployments: configs.map((d) => {
        const note = source.deploymentNotes().get(d.name);
        return {
          name: d.name,
          model: d.model,
          max_nodes: d.maxNodes,
          permanent_error: note?.permanentError ?? null,
          backoff: note?.backoff ?? null,
          launch_failures: note?.launchFailures ?? null,
        };
      }),
    });
  });

  app.get('/workers', (c) =>
    c.json({
      workers: live().map((w) => ({
        worker_id: w.id,
        base_url: `${w.baseUrl}/v1`,
        status: seedStatus(w),
        hostname: w.node,
        requests_served: w.requestsServed,
      })),
    }),
  );
  return app;
}
