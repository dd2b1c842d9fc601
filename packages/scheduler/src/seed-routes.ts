/**
 * The seed's read endpoints, answering with the seed's field names and values so existing
 * clients and scripts keep working: `GET /` (the service banner), `GET /health`,
 * `GET /cluster_status` and `GET /workers`. Worker `status` values are spelled as the seed
 * spells them (`READY`, `LOADING`, `OFFLINE`); this implementation's own state names stay in
 * `state` and in the admin API.
 *
 * Without the admin key these routes answer with counts and states only: node names, engine
 * addresses (`hostname`, `ip_address`, `port`, `base_url`), worker and job ids, log files and
 * SLURM error texts are for a request that proves the admin key (bearer or signed), because
 * every user of the cluster can reach this port.
 */
import { Hono } from 'hono';
import type { DeploymentCatalog, DeploymentConfig, WorkerDirectory, WorkerInfo } from '@es/pool';

/** What the seed endpoints read. */
export interface SeedStatusSource {
  /** The workers and the deployments' configs (the registry; nothing here changes them). */
  registry: WorkerDirectory & Pick<DeploymentCatalog, 'deploymentConfig' | 'deploymentConfigs'>;
  /** Jobs of each state the cluster last reported, over all deployments. */
  jobCounts(): { pending: number; running: number };
  /** Why a deployment is not growing, if it is not: a permanent error or a backoff. */
  deploymentNotes(): ReadonlyMap<string, DeploymentNote>;
  /**
   * Whether a request proves the admin key (`MountedAdmin.isAdmin`); only then do the routes
   * show nodes, addresses, ids and error texts. Absent: never (the public view only).
   */
  isAdmin?: (request: Request) => boolean | Promise<boolean>;
}

/** What `/cluster_status` says about a deployment beyond the seed's fields. */
export interface DeploymentNote {
  permanentError?: string;
  backoff?: string;
  launchFailures?: string;
}

/** A worker's `status` as the seed spells it. */
export type SeedWorkerStatus = 'READY' | 'LOADING' | 'OFFLINE';

/** starting and loading → `LOADING`; draining, failed (and gone) → `OFFLINE`. */
export function seedStatus(w: Pick<WorkerInfo, 'state'>): SeedWorkerStatus {
  if (w.state === 'ready') return 'READY';
  if (w.state === 'starting' || w.state === 'loading') return 'LOADING';
  return 'OFFLINE';
}

const iso = (ms: number) => new Date(ms).toISOString();

/** What anyone may see of a worker: its state and load, nothing that locates it. */
function publicWorker(w: WorkerInfo, tp: number) {
  return {
    status: seedStatus(w),
    engine: w.engine,
    model_name: w.model,
    n_gpus: w.gpus.length,
    tensor_parallel_size: tp,
    registered_at: iso(w.registeredAt),
    last_heartbeat: iso(w.lastHeartbeat),
    requests_served: w.requestsServed,
    deployment: w.deployment,
    state: w.state,
    in_flight: w.inFlight,
    load: w.load ?? null,
  };
}

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
    deployment: w.deployment,
    state: w.state,
    gpus: w.gpus,
    in_flight: w.inFlight,
    load: w.load ?? null,
  };
}

/** The seed's per-cluster facts of one deployment's config and live workers. */
function facts(config: DeploymentConfig | undefined, workers: readonly WorkerInfo[]) {
  const count = (status: SeedWorkerStatus) =>
    workers.filter((w) => seedStatus(w) === status).length;
  return {
    model: config?.model ?? '',
    engine: config?.engine ?? '',
    tensor_parallel_size: config?.tensorParallelSize ?? 1,
    dp_per_node: config ? Math.floor(config.gpusPerNode / config.tensorParallelSize) : 0,
    total_nodes_active: new Set(workers.map((w) => w.jobId)).size,
    total_workers: workers.length,
    ready_workers: count('READY'),
    loading_workers: count('LOADING'),
    offline_workers: count('OFFLINE'),
  };
}

/**
 * Hono routes for the seed's endpoints.
 * @example
 * app.route('/', createSeedRoutes({ registry, jobCounts, deploymentNotes }));
 */
export function createSeedRoutes(source: SeedStatusSource): Hono {
  const app = new Hono();
  const { registry } = source;
  const live = () => registry.workers().filter((w) => w.state !== 'gone');

  // The seed's service banner: what is served, and how much of it is up.
  app.get('/', (c) => {
    const first = registry.deploymentConfigs()[0];
    const all = facts(first, live());
    return c.json({
      service: 'elastic-serving',
      model: all.model,
      engine: all.engine,
      ready_workers: all.ready_workers,
      dp_per_node: all.dp_per_node,
      tensor_parallel_size: all.tensor_parallel_size,
      models: registry.deploymentConfigs().map((d) => d.model),
      endpoints: ['/v1/chat/completions', '/v1/completions', '/v1/models', '/cluster_status'],
    });
  });

  app.get('/health', (c) =>
    c.json({ status: 'ok', ready_workers: live().filter((w) => w.state === 'ready').length }),
  );

  const isAdmin = async (request: Request) => (await source.isAdmin?.(request)) ?? false;

  app.get('/cluster_status', async (c) => {
    const admin = await isAdmin(c.req.raw);
    const configs = registry.deploymentConfigs();
    const workers = live();
    const tpOf = (name: string) => registry.deploymentConfig(name)?.tensorParallelSize ?? 1;
    const notes = source.deploymentNotes();
    return c.json({
      // The seed's fields describe one model: the first deployment's config, every worker.
      ...facts(configs[0], workers),
      max_nodes: configs.reduce((n, d) => n + d.maxNodes, 0),
      pending_slurm_jobs: source.jobCounts().pending,
      workers: workers.map((w) =>
        admin ? seedWorker(w, tpOf(w.deployment)) : publicWorker(w, tpOf(w.deployment)),
      ),
      deployments: configs.map((d) => {
        const note = notes.get(d.name);
        const shared = {
          name: d.name,
          ...facts(
            d,
            workers.filter((w) => w.deployment === d.name),
          ),
          max_nodes: d.maxNodes,
        };
        if (!admin) {
          // Which problem, not its text: sbatch's errors name partitions, accounts and paths.
          const problem = note?.permanentError
            ? 'permanent_error'
            : note?.backoff
              ? 'backoff'
              : note?.launchFailures
                ? 'launch_failures'
                : null;
          return { ...shared, problem };
        }
        return {
          ...shared,
          permanent_error: note?.permanentError ?? null,
          backoff: note?.backoff ?? null,
          launch_failures: note?.launchFailures ?? null,
        };
      }),
    });
  });

  app.get('/workers', async (c) => {
    const admin = await isAdmin(c.req.raw);
    return c.json({
      workers: live().map((w) =>
        admin
          ? {
              worker_id: w.id,
              base_url: `${w.baseUrl}/v1`,
              status: seedStatus(w),
              hostname: w.node,
              requests_served: w.requestsServed,
            }
          : {
              status: seedStatus(w),
              deployment: w.deployment,
              model_name: w.model,
              requests_served: w.requestsServed,
            },
      ),
    });
  });
  return app;
}
