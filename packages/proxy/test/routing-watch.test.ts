import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ROUTING_WATCH_ROUTE,
  createRoutingWatchSigner,
  deriveEngineKey,
  deriveKeys,
  signWorkerRequest,
  writeSchedulerUrl,
} from '@es/protocol';
import { createRegistry, createRoutingWatchServer } from '@es/pool';
import type { Registry, RoutingChange, RoutingWatchServer, RoutingWatchSource } from '@es/pool';
import { afterEach, describe, expect, it } from 'vitest';
import { createRoutingWatchClient } from '../src/index.js';
import type { RoutingWatchClient, RoutingWatchStatus } from '../src/index.js';
import { registerReadyWorker } from './registry-worker.js';
import { SETTINGS } from './watch-settings.js';

// The watch stream end to end: the registry of @es/pool served by createRoutingWatchServer
// on a real socket, and the data plane's client following the scheduler-URL file.

const secret = 'routing-watch-test-secret-0123456789abcdef';
const { dataPlaneKey } = deriveKeys(secret);
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function newRegistry(): Registry {
  const registry = createRegistry({
    deployments: [
      {
        name: 'qwen',
        model: '/models/qwen',
        engine: 'mock',
        tensorParallelSize: 1,
        gpusPerNode: 1,
        maxNodes: 4,
      },
    ],
    upstreamKey: ({ jobId }) => deriveEngineKey(secret, jobId),
  });
  return registry;
}

async function listen(
  handler: Parameters<typeof createServer>[1],
): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  cleanups.push(async () => {
    if (server.listening) await close();
  });
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function serveWatch(
  pool: RoutingWatchSource,
  extra: { maxBufferedBytes?: number; heartbeatMs?: number } = {},
): Promise<{ watch: RoutingWatchServer; server: Server; url: string }> {
  const watch = createRoutingWatchServer({
    pool,
    key: dataPlaneKey,
    heartbeatMs: 200,
    dataPlane: () => SETTINGS,
    ...extra,
  });
  cleanups.push(() => watch.close());
  const { server, url } = await listen((req, res) => {
    if (!watch.handle(req, res)) res.writeHead(404).end();
  });
  return { watch, server, url };
}

function urlFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'es-watch-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'worker-url');
}

function subscribe(file: string, key = dataPlaneKey) {
  const statuses: RoutingWatchStatus[] = [];
  const changes: RoutingChange[] = [];
  const client = createRoutingWatchClient({
    urlFile: file,
    key,
    engineKey: (jobId) => deriveEngineKey(secret, jobId),
    retry: { initialMs: 50, maxMs: 200 },
    silenceMs: 1_000,
    onStatus: (status) => statuses.push(status),
  });
  client.onRoutingChange((change) => changes.push(change));
  cleanups.push(() => client.close());
  return { client, statuses, changes };
}

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<number> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return Date.now() - start;
}

const ids = (client: RoutingWatchClient) => client.routable('qwen').map((w) => w.id);

describe('routing-table watch stream', () => {
  it('sends a snapshot, then the changes in order, each with a higher version', async () => {
    const registry = newRegistry();
    const a = registerReadyWorker(registry, '101', 9001);
    const { watch, url } = await serveWatch(registry);
    const file = urlFile();
    writeSchedulerUrl(file, url);
    const { client, changes } = subscribe(file);
    await until(() => client.connected);
    expect(ids(client)).toEqual([a]);
    expect(client.resolveModel('/models/qwen')?.name).toBe('qwen');
    // The engine key is derived here from the job id: it never crossed the wire.
    expect(client.routable('qwen')[0]!.upstreamKey).toBe(deriveEngineKey(secret, '101'));
    const snapshotVersion = client.version!;

    const b = registerReadyWorker(registry, '102', 9002);
    registry.drain(a, 'preempted');
    const c = registerReadyWorker(registry, '103', 9003);
    await until(() => client.version === watch.version);
    expect(ids(client)).toEqual([b, c]);
    expect(changes.map((ch) => [ch.workerId, ch.routable])).toEqual([
      [a, true], // the snapshot
      [b, true],
      [a, false],
      [c, true],
    ]);
    expect(changes[2]!.reason).toMatch(/^draining/);
    expect(client.version).toBe(snapshotVersion + 3);
  });

  it('a worker made unroutable in the registry leaves the table within a second', async () => {
    const registry = newRegistry();
    const a = registerReadyWorker(registry, '201', 9001);
    const { url } = await serveWatch(registry);
    const file = urlFile();
    writeSchedulerUrl(file, url);
    const { client } = subscribe(file);
    await until(() => client.connected);
    expect(ids(client)).toEqual([a]);
    registry.drain(a, 'scancel');
    const elapsed = await until(() => ids(client).length === 0, 1_000);
    expect(elapsed).toBeLessThan(1_000);
  });

  it("carries a cold deployment's fields, and a new expected start reaches it at once", async () => {
    const registry = createRegistry({
      deployments: [
        {
          name: 'cold',
          model: '/models/cold',
          engine: 'mock',
          tensorParallelSize: 1,
          gpusPerNode: 1,
          maxNodes: 2,
          minNodes: 0,
        },
      ],
    });
    const first = Date.now() + 120_000;
    registry.setDeploymentExpectedReady('cold', first);
    // No heartbeat for a minute: only the registry's announcement can carry a change.
    const { url } = await serveWatch(registry, { heartbeatMs: 60_000 });
    const file = urlFile();
    writeSchedulerUrl(file, url);
    const { client } = subscribe(file);
    await until(() => client.connected);
    const view = () => client.deployments().find((d) => d.name === 'cold');
    expect(view()).toMatchObject({ scalesFromZero: true, expectedReadyAt: first });

    const second = first + 30_000;
    registry.setDeploymentExpectedReady('cold', second);
    expect(await until(() => view()?.expectedReadyAt === second, 1_000)).toBeLessThan(1_000);
    registry.setDeploymentExpectedReady('cold', undefined);
    await until(() => view()?.expectedReadyAt === undefined, 1_000);
    expect(view()?.scalesFromZero).toBe(true);
    expect(client.resolveModel('cold')).toBe(view());
  });

  it('keeps its table while the scheduler is away and catches up on its new port', async () => {
    const registry = newRegistry();
    const a = registerReadyWorker(registry, '301', 9001);
    const first = await serveWatch(registry);
    const file = urlFile();
    writeSchedulerUrl(file, first.url);
    const { client, statuses } = subscribe(file);
    await until(() => client.connected);

    first.watch.close();
    first.server.closeAllConnections();
    await new Promise<void>((resolve) => first.server.close(() => resolve()));
    await until(() => !client.connected);
    // Changes while no stream is open: the client cannot know them yet.
    registry.drain(a, 'preempted');
    const b = registerReadyWorker(registry, '302', 9002);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(ids(client)).toEqual([a]); // static stability: the last table keeps serving
    expect(client.resolveModel('qwen')?.name).toBe('qwen');

    const second = await serveWatch(registry);
    expect(second.url).not.toBe(first.url);
    writeSchedulerUrl(file, second.url);
    await until(() => client.connected);
    expect(ids(client)).toEqual([b]); // a fresh snapshot replaced the table
    expect(statuses.filter((s) => s.kind === 'subscribed').map((s) => s.url)).toEqual([
      first.url,
      second.url,
    ]);
  });

  it('ejects a failing worker in this process only', async () => {
    const registry = newRegistry();
    const a = registerReadyWorker(registry, '401', 9001);
    const b = registerReadyWorker(registry, '402', 9002);
    const { url } = await serveWatch(registry);
    const file = urlFile();
    writeSchedulerUrl(file, url);
    const { client } = subscribe(file);
    await until(() => client.connected);
    for (let i = 0; i < 3; i += 1) client.reportOutcome(a, 'connect-error');
    expect(ids(client)).toEqual([b]);
    // The scheduler's registry, and so every other data-plane process, still routes to it.
    expect(registry.routable('qwen').map((w) => w.id)).toEqual([a, b]);
  });

  it('refuses a forged or unsigned stream and an unsigned subscription', async () => {
    // A squatter on the scheduler's port: answers with a table signed with another key,
    // or with plain JSON lines.
    let forge: 'wrong-key' | 'unsigned' = 'wrong-key';
    const { url } = await listen((req, res) => {
      const nonce = String(req.headers['x-es-nonce'] ?? '');
      const event = {
        type: 'snapshot' as const,
        version: 1,
        dataPlane: SETTINGS,
        deployments: [
          {
            name: 'qwen',
            modelNames: ['qwen'],
            model: '/m',
            engine: 'mock' as const,
            routing: 'round-robin',
          },
        ],
        workers: [
          {
            id: 'evil.0.0',
            deployment: 'qwen',
            baseUrl: 'http://10.6.6.6:80',
            key: 'job' as const,
          },
        ],
      };
      res.writeHead(200, { 'content-type': ROUTING_WATCH_ROUTE.contentType });
      res.write(
        forge === 'wrong-key'
          ? createRoutingWatchSigner(
              deriveKeys('another-secret-0123456789abcdef').dataPlaneKey,
              nonce,
            ).line(event)
          : `${JSON.stringify(event)}\n`,
      );
    });
    const file = urlFile();
    writeSchedulerUrl(file, url);
    const { client, statuses } = subscribe(file);
    await until(() => statuses.filter((s) => s.kind === 'refused').length >= 2);
    forge = 'unsigned';
    await until(() => statuses.filter((s) => s.kind === 'refused').length >= 4);
    expect(statuses.every((s) => s.kind === 'refused' && s.code === 'bad_signature')).toBe(true);
    expect(client.version).toBeUndefined();
    expect(client.routable('qwen')).toEqual([]);
    expect(client.resolveModel('qwen')).toBeUndefined();

    // The real server refuses a subscription that is not signed with the data-plane key.
    const registry = newRegistry();
    const real = await serveWatch(registry);
    const unsigned = await fetch(real.url + ROUTING_WATCH_ROUTE.path);
    expect(unsigned.status).toBe(401);
    const wrongKey = await fetch(real.url + ROUTING_WATCH_ROUTE.path, {
      headers: signWorkerRequest(deriveKeys(secret).workerKey, {
        method: 'GET',
        path: ROUTING_WATCH_ROUTE.path,
        body: '',
      }),
    });
    expect(wrongKey.status).toBe(401);
    expect(((await wrongKey.json()) as { error: { code: string } }).error.code).toBe(
      'bad_signature',
    );
    expect(real.watch.subscribers).toBe(0);
  });

  it('drops a subscriber that stops reading instead of buffering for it', async () => {
    const listeners = new Set<(change: RoutingChange) => void>();
    const source: RoutingWatchSource = {
      deployments: () => [],
      controlRoutable: () => [],
      onControlRoutingChange(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
    };
    const { watch, url } = await serveWatch(source, { maxBufferedBytes: 64 * 1024 });
    const { port } = new URL(url);
    const path = ROUTING_WATCH_ROUTE.path;
    const headers = signWorkerRequest(dataPlaneKey, { method: 'GET', path, body: '' });
    const socket = connect(Number(port), '127.0.0.1');
    cleanups.push(() => void socket.destroy());
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.pause(); // never reads
    socket.write(
      `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('')}\r\n`,
    );
    await until(() => watch.subscribers === 1);
    const reason = 'x'.repeat(10_000);
    for (let i = 0; i < 3_000 && watch.subscribers > 0; i += 1) {
      for (const listener of listeners) {
        listener({ deployment: 'qwen', workerId: `${i}.0.0`, routable: false, reason });
      }
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(watch.subscribers).toBe(0);
    expect(watch.dropped).toBe(1);
  });
});
