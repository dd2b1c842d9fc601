import { describe, expect, test } from 'vitest';
import {
  formatClusterBanner,
  parseClusterStatus,
  parseModelList,
  readinessOf,
} from '../src/cluster-status.js';
import type { ClusterSnapshot } from '../src/cluster-status.js';

// A /cluster_status body as the seed's scheduler (and this one) sends it.
const seedBody = {
  model: '/models/gpt-oss-120b',
  engine: 'vllm',
  max_nodes: 16,
  tensor_parallel_size: 4,
  dp_per_node: 2,
  total_nodes_active: 3,
  total_workers: 6,
  ready_workers: 4,
  loading_workers: 2,
  offline_workers: 0,
  pending_slurm_jobs: 1,
  workers: [],
};

const snapshot = (status: object | undefined, models: unknown[] = []): ClusterSnapshot => {
  const parsed = parseClusterStatus(status);
  return {
    models: parseModelList(models),
    ...(parsed === undefined ? { statusError: 'HTTP 404' } : { status: parsed }),
  };
};

describe('the cluster banner', () => {
  test("shows the seed's facts: model, engine, ready workers, nodes, TP and DP per node", () => {
    const banner = formatClusterBanner(
      snapshot(seedBody, [
        { id: 'gpt-oss-120b', object: 'model', engine: 'vllm', ready_workers: 4 },
      ]),
      { schedulerUrl: 'http://head:8780', run: '100 requests, concurrency 32' },
    );
    expect(banner).toBe(
      [
        'scheduler    http://head:8780',
        'model        gpt-oss-120b (engine vllm)',
        'workers      4 ready, 2 loading, 0 offline, 1 SLURM job pending (6 in all)',
        'nodes        3 active of 16 at most; TP=4, DP=2/node',
        'test         100 requests, concurrency 32',
      ].join('\n'),
    );
  });

  test('fields the server does not send show as ?, and a server without /cluster_status is named', () => {
    const partial = formatClusterBanner(snapshot({ model: 'm', ready_workers: 0 }), {
      schedulerUrl: 'http://s',
    });
    expect(partial).toContain('model        m\n');
    expect(partial).toContain('workers      0 ready\n');
    expect(partial).toContain('nodes        ? active of ? at most; TP=?, DP=?/node');

    const plain = formatClusterBanner(snapshot(undefined, [{ id: 'llama' }]), {
      schedulerUrl: 'http://vllm:8000',
    });
    expect(plain).toBe(
      [
        'scheduler    http://vllm:8000',
        'model        llama',
        'cluster      unknown (GET /cluster_status: HTTP 404)',
      ].join('\n'),
    );
  });

  test("a model's own ready count (from /v1/models) wins over the cluster's", () => {
    const two = snapshot(seedBody, [
      { id: 'a', ready_workers: 0 },
      { id: 'b', ready_workers: 4 },
    ]);
    expect(readinessOf(two, 'a')?.ready).toBe(0);
    expect(readinessOf(two, 'b')?.ready).toBe(4);
    expect(readinessOf(two)?.ready).toBe(4);
    expect(readinessOf(snapshot(undefined, [{ id: 'x' }]))).toBeUndefined();
  });
});
