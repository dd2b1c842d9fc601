import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKER_API_PREFIX, deriveKeys, signWorkerRequest } from '@es/protocol';
import { createRegistry, createWorkerApi } from '../src/index.js';
import type { RoutingChange } from '../src/index.js';
import { deployment, registration, serveOnLoopback } from './helpers.js';

const { workerKey } = deriveKeys('a shared secret');
const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
let served: Awaited<ReturnType<typeof serveOnLoopback>>;
let base: string;

beforeAll(async () => {
  served = await serveOnLoopback(createWorkerApi(registry, { workerKey }).fetch);
  base = `${served.url}${WORKER_API_PREFIX}`;
});

afterAll(() => served.close());

/** A load distinct per worker index, so each heartbeat's effect can be told apart. */
const loadOf = (i: number) => ({ running: i % 97, waiting: i % 13, kvCacheUsage: (i % 11) / 10 });

/** POST signed with `key` (null: unsigned). */
async function post(path: string, body: unknown, key: string | null = workerKey) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const signature =
    key === null
      ? {}
      : signWorkerRequest(key, { method: 'POST', path: `${WORKER_API_PREFIX}${path}`, body: text });
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { ...signature, 'content-type': 'application/json' },
    body: text,
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('worker API over a real socket', () => {
  it('registers, heartbeats to ready, drains and deregisters', async () => {
    const registered = await post('/register', registration('500', 0, { port: 9500 }));
    expect(registered).toEqual({
      status: 200,
      body: { workerId: '500.0.0', heartbeatIntervalMs: 1000 },
    });
    const beat = await post('/500.0.0/heartbeat', {
      state: 'ready',
      restartCount: 0,
      load: { running: 1, waiting: 0, kvCacheUsage: 0.25 },
    });
    expect(beat).toEqual({ status: 200, body: { ok: true } });
    expect(registry.routable('m').map((w) => w.baseUrl)).toContain('http://127.0.0.1:9500');
    expect((await post('/500.0.0/drain', { reason: 'SIGTERM' })).status).toBe(200);
    expect(registry.routable('m').map((w) => w.id)).not.toContain('500.0.0');
    expect((await post('/500.0.0/deregister', { reason: 'exit 0' })).status).toBe(200);
    expect(registry.worker('500.0.0')?.state).toBe('gone');
  });

  it('refuses a request signed with another key, or unsigned, with 401 bad_signature', async () => {
    const wrong = await post('/register', registration('501'), deriveKeys('another').workerKey);
    expect(wrong.status).toBe(401);
    expect(wrong.body).toEqual({
      error: {
        message: expect.stringContaining('x-es-signature does not sign this request') as string,
        type: 'invalid_request_error',
        param: 'x-es-signature',
        code: 'bad_signature',
      },
    });
    const unsigned = await post('/register', registration('501'), null);
    expect(unsigned).toMatchObject({
      status: 401,
      body: { error: { code: 'bad_signature', param: 'x-es-signature' } },
    });
    expect(String((unsigned.body.error as { message: string }).message)).toContain(
      'missing x-es-signature',
    );
    expect(registry.job('501')).toBeUndefined();
  });

  it('answers 400 naming the invalid field', async () => {
    const bad = await post('/register', { ...registration('502'), restartCount: -1 });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ param: 'restartCount', code: 'invalid_request' });
    const missing = await post('/register', { ...registration('502'), host: undefined });
    expect(missing.body.error).toMatchObject({ param: 'host' });
    const load = await post('/1.0.0/heartbeat', {
      state: 'ready',
      restartCount: 0,
      load: { running: 'a', waiting: 0 },
    });
    expect(load.body.error).toMatchObject({ param: 'load.running' });
    const json = await post('/register', '{not json');
    expect(json).toMatchObject({
      status: 400,
      body: {
        error: { param: 'body', code: 'invalid_request', message: 'body is not valid JSON' },
      },
    });
  });

  it('reads a body as JSON only when it is sent as JSON (as workers send it)', async () => {
    const text = JSON.stringify(registration('508'));
    const path = `${WORKER_API_PREFIX}/register`;
    const response = await fetch(`${base}/register`, {
      method: 'POST',
      headers: { ...signWorkerRequest(workerKey, { method: 'POST', path, body: text }) },
      body: text,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: unknown }).error).toMatchObject({
      code: 'invalid_request',
    });
    expect(registry.job('508')).toBeUndefined();
  });

  it.each(['127.0.0.1/../x', 'user@host', 'evil.com:80/x', 'gpu 1', '[::1]', 'host?x=1', ''])(
    'answers 400 naming host for a registered host %j that is no host name or IP address',
    async (host) => {
      const refused = await post('/register', registration('505', 0, { host }));
      expect(refused.status).toBe(400);
      expect(refused.body.error).toMatchObject({ param: 'host', code: 'invalid_request' });
      expect(String((refused.body.error as { message: string }).message)).toContain(
        'invalid host: expected a host name (RFC 1123), an IPv4 or an IPv6 address',
      );
      expect(registry.job('505')).toBeUndefined();
    },
  );

  it.each([
    ['506', 'gpu-12'],
    ['507', 'node12.cluster.example.org'],
    ['508', '10.0.3.7'],
    ['509', '::1'],
    ['510', 'fe80::1'],
  ])('registers worker %s on host %j', async (id, host) => {
    expect((await post('/register', registration(id, 0, { host }))).status).toBe(200);
  });

  it('answers 404 to unknown workers and 409 to fenced incarnations', async () => {
    expect((await post('/999.0.0/heartbeat', { state: 'ready', restartCount: 0 })).status).toBe(
      404,
    );
    await post('/register', registration('503', 0, { state: 'ready' }));
    await post('/register', registration('503', 0, { restartCount: 1 }));
    const fenced = await post('/503.0.0/heartbeat', { state: 'ready', restartCount: 0 });
    expect(fenced.status).toBe(409);
    expect(fenced.body.error).toMatchObject({ code: 'fenced' });
    expect((await post('/register', registration('503'))).status).toBe(409);
    expect((await post('/register', registration('504', 0, { deployment: 'x' }))).status).toBe(404);
  });

  it('a steady heartbeat updates load in place and rebuilds no routing, whatever the pool size', async () => {
    const app = createWorkerApi(registry, { workerKey });
    const ids = Array.from(
      { length: 1024 },
      (_, i) =>
        registry.register(registration(`8${String(i).padStart(4, '0')}`, 0, { state: 'ready' }))
          .workerId,
    );
    const routing = registry.routable('m');
    const changes: RoutingChange[] = [];
    const unsubscribe = registry.onRoutingChange((change) => changes.push(change));
    const responses = await Promise.all(
      ids.map((id, i) => {
        const path = `${WORKER_API_PREFIX}/${id}/heartbeat`;
        const body = JSON.stringify({ state: 'ready', restartCount: 0, load: loadOf(i) });
        const signature = signWorkerRequest(workerKey, { method: 'POST', path, body });
        return app.request(path, {
          method: 'POST',
          body,
          headers: { ...signature, 'content-type': 'application/json' },
        });
      }),
    );
    unsubscribe();
    expect(responses.every((r) => r.status === 200)).toBe(true);
    // Rebuilding the routable set walks the whole deployment: done on every heartbeat, a
    // round of n heartbeats would cost n². A speed bound cannot tell that from a busy
    // machine; the set's identity can.
    expect(registry.routable('m')).toBe(routing);
    expect(changes).toEqual([]);
    const routed = new Map(routing.map((w) => [w.id, w.load]));
    expect(ids.map((id) => routed.get(id))).toEqual(ids.map((_, i) => loadOf(i)));
  });

  it('takes 1,024 workers heartbeating at once over the socket', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 1024; i++) {
      ids.push(
        registry.register(
          registration(`7${String(i).padStart(4, '0')}`, 0, { port: 10_000 + i, state: 'ready' }),
        ).workerId,
      );
    }
    const beat = (id: string, i: number) =>
      post(`/${id}/heartbeat`, { state: 'ready', restartCount: 0, load: loadOf(i) });
    const statuses = await Promise.all(ids.map(async (id, i) => (await beat(id, i)).status));
    expect(statuses.every((s) => s === 200)).toBe(true);
    // Every heartbeat reached its own worker. No wall-clock bound: client and server share
    // one event loop, and the machine with other test runs (5-12 s at load 7-15, 18 s seen);
    // tens of ms per heartbeat spent serially would still run into the test's timeout.
    const routed = new Map(registry.routable('m').map((w) => [w.id, w.load]));
    expect(ids.map((id) => routed.get(id))).toEqual(ids.map((_, i) => loadOf(i)));
  });
});
