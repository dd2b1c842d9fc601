/**
 * How finished requests show in `/metrics`, the traffic series and the per-worker figures,
 * through the admin app's routes (`app.request`, no socket), fed the proxy's request records.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { NodeProvider } from '@es/pool';
import type { ProxyRequestRecord } from '@es/proxy';
import type { SeriesResponse, StatusResponse } from '@es/client';
import { createAdminApi, createMetrics, type AdminApi, type Metrics } from '../src/index.js';
import { createFakePool, metric, scalingStatus } from './fake-pool.js';

let metrics: Metrics;
let api: AdminApi;
const workerId = '7.0.0';

beforeEach(() => {
  // Only the series' sampling timer is faked: the test closes a sample when it wants one.
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  // One deployment `d` with one ready worker that has served nothing yet.
  const pool = createFakePool(undefined, 'd');
  pool.addJob('7', 1);
  metrics = createMetrics({ defaultMetrics: false, sampleIntervalMs: 1_000 });
  api = createAdminApi({
    operator: pool.operator,
    readModel: pool.readModel,
    events: pool.events,
    metrics,
    logDir: '/tmp',
  });
});

afterEach(() => {
  api.close();
  metrics.close();
  vi.useRealTimers();
});

function record(overrides: Partial<ProxyRequestRecord>): ProxyRequestRecord {
  return {
    requestId: 'r',
    path: '/v1/chat/completions',
    model: 'm',
    deployment: 'd',
    workerId,
    stream: true,
    status: 200,
    outcome: 'ok',
    latencyMs: 800,
    ttfbMs: 40,
    queuedMs: 0,
    retries: 0,
    ...overrides,
  };
}

async function scrape(): Promise<string> {
  const res = await api.request('/metrics');
  expect(res.status).toBe(200);
  return res.text();
}

async function worker(): Promise<StatusResponse['deployments'][number]['workers'][number]> {
  const res = await api.request('/api/v1/admin/status');
  const body = (await res.json()) as StatusResponse;
  const found = body.deployments[0]?.workers.find((w) => w.id === workerId);
  expect(found).toBeDefined();
  return found as NonNullable<typeof found>;
}

const chat = { deployment: 'd', route: '/v1/chat/completions' };

describe('a stream the proxy cut with an error event', () => {
  it('is counted as stream_error, not 200, and as an error of its worker', async () => {
    expect((await worker()).requestErrors).toBe(0);
    metrics.observeRequest(record({}));
    metrics.observeRequest(
      record({
        outcome: 'mid-stream-failure',
        errorCode: 'upstream_stream_interrupted',
        latencyMs: 120,
      }),
    );

    const text = await scrape();
    expect(text).toContain(
      'es_requests_total{deployment="d",status="stream_error",route="/v1/chat/completions"} 1\n',
    );
    expect(metric(text, 'es_requests_total', { ...chat, status: '200' })).toBe(1);
    expect(metric(text, 'es_requests_total', chat)).toBe(2);
    // Its 120 ms is when it was cut, not how long an answer took: only the full answer is a
    // duration. Its first byte was really sent at 40 ms, so TTFB has both.
    expect(metric(text, 'es_request_duration_seconds_count', chat)).toBe(1);
    expect(metric(text, 'es_request_duration_seconds_sum', chat)).toBe(0.8);
    expect(metric(text, 'es_time_to_first_byte_seconds_count', chat)).toBe(2);

    const w = await worker();
    expect(w.requestErrors).toBe(1);
    // The served figure is the read model's (the registry's, fed by the proxy's outcome
    // reports), not this test's.
    expect(w.requestsServed).toBe(0);

    vi.advanceTimersByTime(1_000);
    const series = (await (await api.request('/api/v1/admin/series')).json()) as SeriesResponse;
    expect(series.samples.at(-1)).toMatchObject({ requestsPerSecond: 2, errorsPerSecond: 1 });
  });

  it('5xx are errors of their worker; a client 4xx and a client abort (499) are not', async () => {
    metrics.observeRequest(record({ status: 502, outcome: 'upstream-error', stream: false }));
    metrics.observeRequest(record({ status: 400, outcome: 'ok', stream: false }));
    metrics.observeRequest(
      record({ status: 499, outcome: 'client-abort', errorCode: 'client_closed_request' }),
    );
    // No worker: a rejection before routing is an error of the service, of no worker.
    const unrouted = record({ status: 503, outcome: 'rejected' });
    delete unrouted.workerId;
    metrics.observeRequest(unrouted);

    const text = await scrape();
    for (const status of ['502', '400', '499', '503']) {
      expect(metric(text, 'es_requests_total', { ...chat, status }), status).toBe(1);
    }
    // The abort stopped when the client left: not a duration.
    expect(metric(text, 'es_request_duration_seconds_count', chat)).toBe(3);
    expect((await worker()).requestErrors).toBe(1);
    vi.advanceTimersByTime(1_000);
    const series = (await (await api.request('/api/v1/admin/series')).json()) as SeriesResponse;
    expect(series.samples.at(-1)).toMatchObject({ requestsPerSecond: 4, errorsPerSecond: 2 });
  });
});

describe('continuations', () => {
  it('are counted by outcome and reason, with the client wait at the splice', async () => {
    const base = { requestId: 'r', deployment: 'd', fromWorker: workerId, generatedTokens: 5 };
    metrics.observeContinuation({
      ...base,
      toWorker: '8.0.0',
      outcome: 'continued',
      reason: 'connection',
      cause: 'connection',
      waitMs: 40,
    });
    metrics.observeContinuation({
      ...base,
      toWorker: '8.0.0',
      outcome: 'continued',
      reason: 'connection',
      cause: 'connection',
      waitMs: 2_000,
    });
    metrics.observeContinuation({ ...base, outcome: 'refused', reason: 'n', cause: 'connection' });
    metrics.observeContinuation({
      ...base,
      outcome: 'failed',
      reason: 'no-worker',
      cause: 'stall',
    });
    const text = await scrape();
    const labels = (outcome: string, reason: string) => ({ deployment: 'd', outcome, reason });
    expect(metric(text, 'es_continuations_total', labels('continued', 'connection'))).toBe(2);
    expect(metric(text, 'es_continuations_total', labels('refused', 'n'))).toBe(1);
    expect(metric(text, 'es_continuations_total', labels('failed', 'no-worker'))).toBe(1);
    expect(metric(text, 'es_continuation_wait_seconds_count', { deployment: 'd' })).toBe(2);
    expect(metric(text, 'es_continuation_wait_seconds_sum', { deployment: 'd' })).toBe(2.04);
    expect(
      metric(text, 'es_continuation_wait_seconds_bucket', { deployment: 'd', le: '0.05' }),
    ).toBe(1);
  });
});

describe('provider calls', () => {
  it('counts releases like the other calls, and keeps a provider without one without one', async () => {
    const { instrumentProvider } = await import('../src/index.js');
    const metrics = createMetrics({ defaultMetrics: false });
    let refuse = false;
    const provider: NodeProvider = {
      kind: 'slurm',
      submit: async () => '1',
      list: async () => [],
      cancel: async () => undefined,
      release: async () => {
        if (refuse) throw Object.assign(new Error('Access/permission denied'), { kind: 'policy' });
      },
    };
    const counted = instrumentProvider(provider, metrics);
    await counted.release?.(['7']);
    refuse = true;
    await expect(counted.release?.(['7'])).rejects.toThrow('Access/permission denied');
    const text = await metrics.render();
    for (const outcome of ['ok', 'policy']) {
      expect(
        metric(text, 'es_provider_calls_total', {
          provider: 'slurm',
          operation: 'release',
          outcome,
        }),
      ).toBe(1);
    }
    const { release: _none, ...withoutRelease } = provider;
    const plain: NodeProvider = instrumentProvider(withoutRelease, metrics);
    expect(plain.release).toBeUndefined();
  });
});

describe('demand-aware scaling in /metrics and the status', () => {
  it('shows the target (maxNodes when it does not scale), the load and the need', async () => {
    const before = await scrape();
    expect(metric(before, 'es_target_nodes', { deployment: 'd' })).toBe(2);
    expect(before).not.toMatch(/^es_scaling_load\{/m);
    const pool = createFakePool(undefined, 'd');
    pool.deployments.get('d')!.scaling = { ...scalingStatus(), downSince: 1_000 };
    const scaledMetrics = createMetrics({ defaultMetrics: false });
    const scaledApi = createAdminApi({
      operator: pool.operator,
      readModel: pool.readModel,
      events: pool.events,
      metrics: scaledMetrics,
      logDir: '/tmp',
    });
    try {
      const text = await (await scaledApi.request('/metrics')).text();
      expect(metric(text, 'es_target_nodes', { deployment: 'd' })).toBe(1);
      expect(metric(text, 'es_scaling_load', { deployment: 'd' })).toBe(3.5);
      expect(metric(text, 'es_scaling_need', { deployment: 'd' })).toBe(1);
      const status = (await (
        await scaledApi.request('/api/v1/admin/status')
      ).json()) as StatusResponse;
      expect(status.deployments[0]?.scaling).toMatchObject({ target: 1, downSince: 1_000 });
    } finally {
      scaledApi.close();
      scaledMetrics.close();
    }
  });
});
