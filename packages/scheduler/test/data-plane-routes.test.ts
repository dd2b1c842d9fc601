/**
 * The scheduler's side of its data plane on a real socket, wired as `createScheduler` wires
 * it: the report route mounted on the scheduler's Hono app next to the admin API, the watch
 * stream tried first on the same listener. Reports are refused when forged, replayed or
 * malformed and listed when accepted; their records count in `/metrics`; the stream carries
 * the control plane's routable set, not this process's passive ejections.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { mountAdmin } from '@es/admin';
import { createLocalProvider } from '@es/local';
import { createReconciler, createRegistry } from '@es/pool';
import {
  DATA_PLANE_ROUTES,
  clientKeyHash,
  deriveEngineKey,
  deriveKeys,
  signWorkerRequest,
  writeSchedulerUrl,
  type DataPlaneReport,
} from '@es/protocol';
import { createRoutingWatchClient, startProxyServer } from '@es/proxy';
import { pino } from 'pino';
import { dataPlaneReport, metric, oneGpuDeployment, registerReadyWorker, until } from '@es/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createDataPlaneRoutes, dataPlaneSettings } from '../src/data-plane-routes.js';
import { createScheduler, resolveConfig } from '../src/index.js';

const report = (seq: number, extra: Partial<DataPlaneReport> = {}) =>
  dataPlaneReport(seq, { inFlight: { 'w-1': 2, 'w-2': 1 }, ejected: ['w-3'], ...extra });

type DataPlaneView = ReturnType<ReturnType<typeof createDataPlaneRoutes>['view']>;

const secret = 'data-plane-routes-test-secret-0123456789';
const { dataPlaneKey, workerKey } = deriveKeys(secret);
const adminKey = 'data-plane-routes-admin-key';
const { path } = DATA_PLANE_ROUTES.report;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startScheduler() {
  const dir = mkdtempSync(join(tmpdir(), 'es-data-plane-routes-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const registry = createRegistry({
    deployments: [oneGpuDeployment()],
    upstreamKey: ({ jobId }) => deriveEngineKey(secret, jobId),
  });
  const app = new Hono();
  const admin = mountAdmin(app, { events: registry, logDir: dir, adminKey });
  const routes = createDataPlaneRoutes({
    registry,
    dataPlaneKey,
    settings: dataPlaneSettings({
      apiKeys: ['client-key'],
      corsOrigins: [],
      exposeSelectedEndpoint: false,
      maxContinuations: 3,
      stallTimeoutS: 30,
      bodyBudgetMb: 128,
      clientIdleTimeoutS: 60,
      maxConnections: 1000,
      coldStartWaitS: 120,
    }),
    hooks: admin,
  });
  app.route('/', routes.app);
  // The reconciler is the admin's read model; never started, it submits nothing.
  const provider = createLocalProvider({ nodes: 1, gpusPerNode: 1 });
  const reconciler = createReconciler({
    registry,
    provider,
    schedulerId: 'data-plane-routes-test',
    buildNodeRequest: () => {
      throw new Error('this test submits no job');
    },
  });
  admin.attach({ operator: reconciler, readModel: reconciler, dataPlane: routes.view });
  const server = await startProxyServer({ fetch: app.fetch, handle: routes.watch.handle });
  cleanups.push(async () => {
    routes.close();
    await server.close(1_000);
    admin.close();
    await provider.close({ kill: true });
  });
  return { registry, routes, url: server.url, dir };
}

async function send(
  url: string,
  body: string,
  key = dataPlaneKey,
  headers?: Record<string, string>,
) {
  const signed = headers ?? signWorkerRequest(key, { method: 'POST', path, body });
  const res = await fetch(url + path, {
    method: 'POST',
    headers: { ...signed, 'content-type': 'application/json' },
    body,
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: signed,
    error:
      text === ''
        ? undefined
        : (JSON.parse(text) as { error: { code: string; param: string | null } }).error,
  };
}

async function admin<T>(url: string, route: string): Promise<T> {
  const res = await fetch(url + route, { headers: { authorization: `Bearer ${adminKey}` } });
  expect(res.status).toBe(200);
  return (route === '/metrics' ? await res.text() : await res.json()) as T;
}

const request = (requestId: string, status = 200) => ({
  requestId,
  path: '/v1/chat/completions',
  stream: true,
  status,
  outcome: status === 200 ? 'ok' : 'upstream-error',
  latencyMs: 40,
  queuedMs: 0,
  retries: 0,
  deployment: 'qwen',
});

describe('data-plane report route', () => {
  it('lists an accepted report and refuses forged, replayed and malformed ones', async () => {
    const { url } = await startScheduler();
    const empty = await admin<DataPlaneView>(url, '/api/v1/admin/data-plane');
    expect(empty.processes).toEqual([]);

    // Signed with another derived key (the workers'): refused, nothing recorded.
    const forged = await send(url, JSON.stringify(report(1)), workerKey);
    expect(forged).toMatchObject({ status: 401, error: { code: 'bad_signature' } });
    expect((await admin<DataPlaneView>(url, '/api/v1/admin/data-plane')).processes).toEqual([]);

    const body = JSON.stringify(report(1));
    const accepted = await send(url, body);
    expect(accepted.status).toBe(204);
    const replayed = await send(url, body, dataPlaneKey, accepted.headers);
    expect(replayed).toMatchObject({ status: 401, error: { code: 'replayed' } });

    const bad = await send(url, JSON.stringify({ ...report(2), inFlight: { 'w-1': -1 } }));
    expect(bad).toMatchObject({
      status: 400,
      error: { code: 'invalid_request', param: 'inFlight.w-1' },
    });
    const notJson = await send(url, '{"id":');
    expect(notJson).toMatchObject({ status: 400, error: { code: 'invalid_request' } });

    const listed = await admin<DataPlaneView>(url, '/api/v1/admin/data-plane');
    expect(listed.processes).toHaveLength(1);
    expect(listed.processes[0]).toMatchObject({
      id: 'login1:4242',
      listen: 'http://0.0.0.0:8780',
      state: 'serving',
      tableVersion: 0,
      inFlight: 3,
      ejected: ['w-3'],
      missedReports: 0,
    });
    expect(listed.processes[0]!.lastContactSeconds).toBeLessThan(5);
    const status = await admin<{ dataPlane: DataPlaneView }>(url, '/api/v1/admin/status');
    expect(status.dataPlane.processes.map((p) => p.id)).toEqual(['login1:4242']);
  });

  it("counts every process's request and continuation records in /metrics and per worker", async () => {
    const { url, registry } = await startScheduler();
    const w = registerReadyWorker(registry, '1', 9001);
    const served = () => registry.workers().find((x) => x.id === w)?.requestsServed;
    const total = (text: string, labels: Record<string, string> = {}) =>
      metric(text, 'es_requests_total', { deployment: 'qwen', ...labels });
    const before = await admin<string>(url, '/metrics');
    expect(total(before)).toBe(0);

    const first = report(1, {
      requests: [
        { ...request('a'), workerId: w },
        { ...request('b', 502), workerId: w },
      ],
    });
    expect((await send(url, JSON.stringify(first))).status).toBe(204);
    const other = report(1, {
      id: 'login2:77',
      host: 'login2',
      pid: 77,
      requests: [request('c')],
      continuations: [
        {
          requestId: 'c',
          deployment: 'qwen',
          fromWorker: 'w-1',
          outcome: 'continued',
          reason: 'hand-over',
          cause: 'worker drained',
          generatedTokens: 12,
        },
      ],
    });
    expect((await send(url, JSON.stringify(other))).status).toBe(204);
    // Re-sent after a lost answer (same process, same seq, a fresh nonce): counted once.
    expect((await send(url, JSON.stringify(first))).status).toBe(204);

    const after = await admin<string>(url, '/metrics');
    expect(total(after)).toBe(3);
    expect(total(after, { status: '502' })).toBe(1);
    // `requests_served` of /workers, SERVED of es status: the one that was served, once.
    expect(served()).toBe(1);
    expect(
      metric(after, 'es_continuations_total', { deployment: 'qwen', outcome: 'continued' }),
    ).toBe(1);
    const listed = await admin<DataPlaneView>(url, '/api/v1/admin/data-plane');
    expect(listed.processes.map((p) => p.id)).toEqual(['login1:4242', 'login2:77']);
  });

  it("sums the requests waiting in the processes' queues per deployment (queuedRequests)", async () => {
    const { url, routes } = await startScheduler();
    expect(routes.queuedRequests()).toEqual({});
    const queued = (id: string, pid: number, seq: number, counts: Record<string, number>) =>
      send(url, JSON.stringify(report(seq, { id, pid, queued: counts })));
    expect((await queued('login1:1', 1, 1, { qwen: 2 })).status).toBe(204);
    expect((await queued('login2:2', 2, 1, { qwen: 1, other: 4 })).status).toBe(204);
    expect(routes.queuedRequests()).toEqual({ qwen: 3, other: 4 });
    // A process's latest report replaces its previous counts.
    expect((await queued('login1:1', 1, 2, {})).status).toBe(204);
    expect(routes.queuedRequests()).toEqual({ qwen: 1, other: 4 });
    const bad = await queued('login1:1', 1, 3, { qwen: -1 });
    expect(bad).toMatchObject({ status: 400, error: { param: 'queued.qwen' } });
  });
});

describe('watch stream served by the scheduler', () => {
  it('keeps a worker the in-process proxy ejected, drops a drained one', async () => {
    const { registry, routes, url, dir } = await startScheduler();
    const a = registerReadyWorker(registry, '1', 9001);
    const b = registerReadyWorker(registry, '2', 9002);
    const c = registerReadyWorker(registry, '3', 9003);
    const file = join(dir, 'control-url');
    writeSchedulerUrl(file, url);
    const client = createRoutingWatchClient({
      urlFile: file,
      key: dataPlaneKey,
      engineKey: (jobId) => deriveEngineKey(secret, jobId),
      retry: { initialMs: 50, maxMs: 200 },
    });
    cleanups.push(() => client.close());
    await until(() => (client.connected ? true : undefined), 5_000, 'the subscription');
    expect(client.settings?.clientKeyHashes).toEqual([clientKeyHash('client-key')]);
    // --cold-start-wait reaches every data-plane process.
    expect(client.settings?.coldStartTimeoutMs).toBe(120_000);
    const ids = () => client.routable('qwen').map((w) => w.id);
    expect(ids()).toEqual([a, b, c]);

    // The in-process proxy's failed attempts eject `a` from this process's routing only.
    for (let i = 0; i < 3; i += 1) registry.reportOutcome(a, 'connect-error');
    expect(registry.routable('qwen').map((w) => w.id)).toEqual([b, c]);
    // A drain is the control plane's: it leaves every table. Changes arrive in order, so
    // once the drain is seen an ejection sent before it would have been seen too.
    registry.drain(b, 'preempted');
    await until(() => (ids().includes(b) ? undefined : true), 5_000, 'the drain');
    expect(ids()).toEqual([a, c]);
    expect(client.version).toBe(routes.watch.version);
    const view = await admin<DataPlaneView>(url, '/api/v1/admin/data-plane');
    expect(view).toMatchObject({ tableVersion: routes.watch.version, subscribers: 1 });
  });
});

describe('createScheduler', () => {
  it('serves the watch stream and the report route on the port of its app', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-data-plane-wiring-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const settings = resolveConfig(
      { backend: 'local', model: 'mock-model', gpusPerNode: 1, host: '127.0.0.1', port: 0 },
      {},
    );
    // The in-process layout: its app serves /v1 too, on the one port.
    Object.assign(settings, { logDir: join(dir, 'logs'), proxyProcesses: 0 });
    const provider = createLocalProvider({ nodes: 1, gpusPerNode: 1, killGraceMs: 200 });
    const scheduler = await createScheduler(settings, {
      logger: pino({ level: 'silent' }),
      provider,
      workerCommand: ['sh', '-c', 'sleep 60', 'sh'],
    });
    cleanups.push(async () => {
      await scheduler.close({ cancelJobs: true });
      await provider.close({ kill: true });
    });
    const key = deriveKeys(readFileSync(join(dir, 'logs', 'secret'), 'utf8').trim()).dataPlaneKey;
    const a = registerReadyWorker(scheduler.registry, '1', 9001, 'mock-model');
    const file = join(dir, 'url');
    writeSchedulerUrl(file, scheduler.url);
    const client = createRoutingWatchClient({ urlFile: file, key });
    cleanups.push(() => client.close());
    await until(() => (client.connected ? true : undefined), 5_000, 'the subscription');
    expect(client.routable('mock-model').map((w) => w.id)).toEqual([a]);

    const body = JSON.stringify(report(1, { requests: [request('x')] }));
    const res = await fetch(scheduler.url + path, {
      method: 'POST',
      headers: { ...signWorkerRequest(key, { method: 'POST', path, body }) },
      body,
    });
    expect(res.status).toBe(204);
  });
});
