/**
 * The cluster banner a load test prints first, from what the scheduler says about its
 * cluster the way the seed's tools read it: the public `GET /cluster_status` (model, engine,
 * TP, DP per node, worker counts) and `GET /v1/models` (served names, and per model its
 * engine and ready workers). Any OpenAI-compatible server can sit behind `--scheduler-url`,
 * so every field is optional: what a server does not say is shown as `?`. (Waiting for
 * ready workers is `waitForReadyWorkers` in `wait.ts`.)
 */
import type OpenAI from 'openai';
import { isRecord, messageOf } from './util.js';

/** The seed's `/cluster_status` fields this package reads; each is absent when not sent. */
export interface ClusterStatusFields {
  model?: string;
  engine?: string;
  tensorParallelSize?: number;
  dpPerNode?: number;
  nodesActive?: number;
  maxNodes?: number;
  totalWorkers?: number;
  readyWorkers?: number;
  loadingWorkers?: number;
  offlineWorkers?: number;
  pendingJobs?: number;
}

/** One entry of `/v1/models`; `engine` and `readyWorkers` are the scheduler's additions. */
export interface ServedModel {
  id: string;
  engine?: string;
  readyWorkers?: number;
}

/** The cluster at one moment. */
export interface ClusterSnapshot {
  /** `/cluster_status`; undefined when the server has none (see `statusError`). */
  status?: ClusterStatusFields;
  /** Why `/cluster_status` could not be read, e.g. `HTTP 404`. */
  statusError?: string;
  /** `/v1/models`; empty when the list failed (see `modelsError`). */
  models: ServedModel[];
  modelsError?: string;
}

/** Worker counts of a model (or of the cluster), as far as the server tells them. */
export interface Readiness {
  ready: number;
  loading?: number;
  offline?: number;
  pendingJobs?: number;
}

const num = (body: Record<string, unknown>, key: string) =>
  typeof body[key] === 'number' ? body[key] : undefined;
const str = (body: Record<string, unknown>, key: string) =>
  typeof body[key] === 'string' && body[key] !== '' ? body[key] : undefined;

/** Picks the seed's fields out of a `/cluster_status` body; anything else is ignored. Pure. */
export function parseClusterStatus(body: unknown): ClusterStatusFields | undefined {
  if (!isRecord(body)) return undefined;
  const fields: ClusterStatusFields = {
    model: str(body, 'model'),
    engine: str(body, 'engine'),
    tensorParallelSize: num(body, 'tensor_parallel_size'),
    dpPerNode: num(body, 'dp_per_node'),
    nodesActive: num(body, 'total_nodes_active'),
    maxNodes: num(body, 'max_nodes'),
    totalWorkers: num(body, 'total_workers'),
    readyWorkers: num(body, 'ready_workers'),
    loadingWorkers: num(body, 'loading_workers'),
    offlineWorkers: num(body, 'offline_workers'),
    pendingJobs: num(body, 'pending_slurm_jobs'),
  };
  for (const key of Object.keys(fields) as (keyof ClusterStatusFields)[]) {
    if (fields[key] === undefined) delete fields[key];
  }
  return fields;
}

/** Picks id, `engine` and `ready_workers` out of `/v1/models` entries. Pure. */
export function parseModelList(data: readonly unknown[]): ServedModel[] {
  const models: ServedModel[] = [];
  for (const entry of data) {
    if (!isRecord(entry) || typeof entry.id !== 'string') continue;
    const model: ServedModel = { id: entry.id };
    const engine = str(entry, 'engine');
    if (engine !== undefined) model.engine = engine;
    const ready = num(entry, 'ready_workers');
    if (ready !== undefined) model.readyWorkers = ready;
    models.push(model);
  }
  return models;
}

/**
 * Reads `/cluster_status` (public, at `schedulerUrl`) and `/v1/models` (through `client`).
 * Never throws: what cannot be read is recorded as `statusError` / `modelsError`.
 */
export async function readCluster(
  schedulerUrl: string,
  client: OpenAI,
  signal?: AbortSignal,
): Promise<ClusterSnapshot> {
  const timeout = AbortSignal.timeout(10_000);
  const requestSignal = signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
  const [status, models] = await Promise.all([
    fetch(`${schedulerUrl}/cluster_status`, { signal: requestSignal }).then(
      async (response) => {
        if (!response.ok) return { error: `HTTP ${response.status}` };
        const fields = parseClusterStatus(await response.json().catch(() => undefined));
        return fields === undefined ? { error: 'not a JSON object' } : { fields };
      },
      (error: unknown) => ({ error: messageOf(error) }),
    ),
    client.models.list({ signal: requestSignal }).then(
      (page) => ({ list: parseModelList(page.data) }),
      (error: unknown) => ({ error: messageOf(error) }),
    ),
  ]);
  const snapshot: ClusterSnapshot = { models: 'list' in models ? models.list : [] };
  if ('fields' in status) snapshot.status = status.fields;
  else snapshot.statusError = status.error;
  if ('error' in models) snapshot.modelsError = models.error;
  return snapshot;
}

/**
 * Ready workers of `model` (its `/v1/models` entry when that says), else of the whole
 * cluster (`/cluster_status`); undefined when the server tells neither. Pure.
 */
export function readinessOf(snapshot: ClusterSnapshot, model?: string): Readiness | undefined {
  const status = snapshot.status;
  const entry = model === undefined ? undefined : snapshot.models.find((m) => m.id === model);
  const ready = entry?.readyWorkers ?? status?.readyWorkers;
  if (ready === undefined) return undefined;
  const readiness: Readiness = { ready };
  if (status?.loadingWorkers !== undefined) readiness.loading = status.loadingWorkers;
  if (status?.offlineWorkers !== undefined) readiness.offline = status.offlineWorkers;
  if (status?.pendingJobs !== undefined) readiness.pendingJobs = status.pendingJobs;
  return readiness;
}

/** `2 ready, 1 loading, 0 offline, 1 SLURM job pending` (the parts the server told). Pure. */
export function formatReadiness(readiness: Readiness): string {
  const parts = [`${readiness.ready} ready`];
  if (readiness.loading !== undefined) parts.push(`${readiness.loading} loading`);
  if (readiness.offline !== undefined) parts.push(`${readiness.offline} offline`);
  if (readiness.pendingJobs !== undefined) {
    parts.push(
      `${readiness.pendingJobs} SLURM job${readiness.pendingJobs === 1 ? '' : 's'} pending`,
    );
  }
  return parts.join(', ');
}

/** What the banner says about the run besides the cluster. */
export interface BannerContext {
  schedulerUrl: string;
  /** The model the run will use, when already known (`--model`). */
  model?: string;
  /** One line describing the run, e.g. `100 requests, concurrency 8, chat, streaming`. */
  run?: string;
}

/**
 * The cluster banner printed before a load test, in the seed's facts: scheduler, model,
 * engine, workers ready / loading / offline, nodes active, pending jobs, TP and DP per node.
 * Unknown fields show as `?`. Pure.
 */
export function formatClusterBanner(snapshot: ClusterSnapshot, context: BannerContext): string {
  const status = snapshot.status;
  const model = context.model ?? snapshot.models[0]?.id ?? status?.model;
  const entry = snapshot.models.find((m) => m.id === model);
  const engine = entry?.engine ?? status?.engine;
  const show = (value: number | string | undefined) => (value === undefined ? '?' : String(value));
  const lines = [`scheduler    ${context.schedulerUrl}`];
  lines.push(`model        ${show(model)}${engine === undefined ? '' : ` (engine ${engine})`}`);
  if (status === undefined) {
    lines.push(
      `cluster      unknown (GET /cluster_status: ${snapshot.statusError ?? 'no answer'})`,
    );
  } else {
    const readiness = readinessOf(snapshot, model);
    const total = status.totalWorkers === undefined ? '' : ` (${status.totalWorkers} in all)`;
    lines.push(
      `workers      ${readiness === undefined ? '? ready' : formatReadiness(readiness)}${total}`,
    );
    lines.push(
      `nodes        ${show(status.nodesActive)} active of ${show(status.maxNodes)} at most; ` +
        `TP=${show(status.tensorParallelSize)}, DP=${show(status.dpPerNode)}/node`,
    );
  }
  if (context.run !== undefined) lines.push(`test         ${context.run}`);
  return lines.join('\n');
}
