/**
 * The seed's public routes as its users know them, against the scheduler's own wiring on the
 * local backend (real apps/worker processes, mock engines that take 3 s to load): `GET /`
 * (the service banner), and `/cluster_status` and `/workers` with the seed's worker status
 * spellings (`LOADING`, `READY`, `OFFLINE`) and the facts `es status` shows without a key.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  esCli,
  readyWorkers,
  startAdminTestScheduler,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';
import type { ClusterStatus } from './harness.js';

/** `/cluster_status` with this implementation's per-deployment facts. */
type SeedCluster = ClusterStatus & { deployments: Record<string, unknown>[] };

let s: AdminTestScheduler;
const get = async <T>(path: string): Promise<T> => {
  // No key: these are the public routes.
  const res = await fetch(`${s.url}${path}`);
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
};
/** The same route with the admin key: worker ids, nodes and addresses are shown then only. */
const getAsAdmin = async <T>(path: string): Promise<T> => {
  const res = await fetch(`${s.url}${path}`, {
    headers: { authorization: `Bearer ${s.adminKey}` },
  });
  expect(res.status, path).toBe(200);
  return (await res.json()) as T;
};
/** Every /cluster_status answer seen while the workers loaded. */
const seenWhileLoading: SeedCluster[] = [];

beforeAll(async () => {
  s = await startAdminTestScheduler({ maxNodes: 2, engineExtraArgs: '--load-delay 3000' });
  await until(
    async () => {
      const status = await get<SeedCluster>('/cluster_status');
      seenWhileLoading.push(status);
      return status.ready_workers === 4 ? status : undefined;
    },
    45_000,
    '4 ready workers',
  );
}, 60_000);

afterAll(async () => {
  await s?.close();
});

describe("the seed's public routes", () => {
  it('/cluster_status spells worker status as the seed does: LOADING, then READY', () => {
    const loading = seenWhileLoading.find((st) => st.loading_workers > 0);
    expect(loading, 'a status taken while the engines loaded').toBeDefined();
    const statuses = loading?.workers.map((w) => w.status) ?? [];
    expect(statuses).toContain('LOADING');
    expect(statuses.every((x) => x === 'LOADING' || x === 'READY')).toBe(true);
    expect(loading?.loading_workers).toBe(statuses.filter((x) => x === 'LOADING').length);
    const ready = seenWhileLoading.at(-1);
    expect(ready?.workers.map((w) => w.status)).toEqual(['READY', 'READY', 'READY', 'READY']);
    // This implementation's own names stay in `state`.
    expect(ready?.workers.map((w) => w.state)).toEqual(['ready', 'ready', 'ready', 'ready']);
  });

  it("/cluster_status carries the public status's facts, per cluster and per deployment", async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'EMPTY', maxRetries: 0 });
    await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 4,
    });
    const status = await get<SeedCluster>('/cluster_status');
    const facts = {
      model: 'mock-model',
      engine: 'mock',
      tensor_parallel_size: 2,
      dp_per_node: 2,
      max_nodes: 2,
      total_nodes_active: 2,
      total_workers: 4,
      ready_workers: 4,
      loading_workers: 0,
      offline_workers: 0,
    };
    expect(status).toMatchObject({ ...facts, pending_slurm_jobs: 0 });
    expect(status.deployments).toEqual([expect.objectContaining({ name: 'mock', ...facts })]);
    expect(status.workers.map((w) => w.tensor_parallel_size)).toEqual([2, 2, 2, 2]);
    expect(status.workers.reduce((n, w) => n + w.requests_served, 0)).toBe(1);
  });

  it('a drained worker is OFFLINE in /cluster_status and /workers', async () => {
    const [victim] = readyWorkers(s, 4)() ?? [];
    expect(victim).toBeDefined();
    expect((await esCli(s, 'drain', victim ?? '')).code).toBe(0);
    const status = await until(
      async () => {
        const st = await get<SeedCluster>('/cluster_status');
        return st.offline_workers === 1 ? st : undefined;
      },
      10_000,
      'one OFFLINE worker',
    );
    expect(status).toMatchObject({ ready_workers: 3, loading_workers: 0 });
    // The public answers name no worker; the admin key's do.
    expect(JSON.stringify(status)).not.toContain(victim);
    const publicWorkers = await get<{ workers: { status: string }[] }>('/workers');
    expect(JSON.stringify(publicWorkers)).not.toContain(victim);
    expect(publicWorkers.workers.filter((w) => w.status === 'READY')).toHaveLength(3);
    const keyed = await getAsAdmin<SeedCluster>('/cluster_status');
    expect(keyed.workers.find((w) => w.worker_id === victim)?.status).toBe('OFFLINE');
    const { workers } = await getAsAdmin<{ workers: { worker_id: string; status: string }[] }>(
      '/workers',
    );
    expect(workers.find((w) => w.worker_id === victim)?.status).toBe('OFFLINE');
    expect(workers.filter((w) => w.status === 'READY')).toHaveLength(3);
  });

  it("GET / is the seed's service banner: model, engine, ready workers, DP per node, TP", async () => {
    const banner = await get<Record<string, unknown>>('/');
    const { ready_workers } = await get<SeedCluster>('/cluster_status');
    expect(ready_workers).toBe(3); // one drained above
    expect(banner).toMatchObject({
      service: 'elastic-serving',
      model: 'mock-model',
      engine: 'mock',
      ready_workers: 3,
      dp_per_node: 2,
      tensor_parallel_size: 2,
    });
  });
});
