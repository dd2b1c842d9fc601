/**
 * `@es/protocol`'s worker client against the real server side (`createWorkerApi`): over a
 * socket on 127.0.0.1 with the global fetch, and in-process through `app.request`.
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createWorkerClient, deriveKeys } from '@es/protocol';
import type { HeartbeatRequest, RegisterRequest } from '@es/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistry, createWorkerApi } from '../src/index.js';
import { deployment, registration, serveOnLoopback } from './helpers.js';

const { workerKey } = deriveKeys('a shared secret');
const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
const app = createWorkerApi(registry, { workerKey });
let served: Awaited<ReturnType<typeof serveOnLoopback>>;
let url: string;

beforeAll(async () => {
  served = await serveOnLoopback(app.fetch);
  url = served.url;
});

afterAll(() => served.close());

const ready: HeartbeatRequest = { state: 'ready', restartCount: 0 };

describe('the worker client against createWorkerApi over a socket', () => {
  it('registers, heartbeats, drains and deregisters: ok with the parsed bodies', async () => {
    const client = createWorkerClient({ schedulerUrl: url, workerKey });
    expect(await client.register(registration('700', 0, { port: 9700 }))).toEqual({
      ok: true,
      kind: 'ok',
      status: 200,
      body: { workerId: '700.0.0', heartbeatIntervalMs: 1000 },
    });
    const beat = await client.heartbeat('700.0.0', {
      ...ready,
      load: { running: 2, waiting: 1, kvCacheUsage: 0.5 },
    });
    expect(beat).toEqual({ ok: true, kind: 'ok', status: 200, body: { ok: true } });
    expect(registry.snapshot().workers.find((w) => w.id === '700.0.0')?.state).toBe('ready');
    expect((await client.drain('700.0.0', { reason: 'SIGTERM' })).kind).toBe('ok');
    expect(registry.snapshot().workers.find((w) => w.id === '700.0.0')?.state).toBe('draining');
    expect((await client.deregister('700.0.0', { reason: 'SIGTERM' })).kind).toBe('ok');
  });

  it('unknown (404) for a worker the scheduler does not hold: register again', async () => {
    const client = createWorkerClient({ schedulerUrl: url, workerKey });
    const result = await client.heartbeat('701.0.0', ready);
    expect(result).toMatchObject({
      ok: false,
      kind: 'unknown',
      status: 404,
      code: 'unknown_worker',
    });
    expect((await client.drain('701.0.0', { reason: 'x' })).kind).toBe('unknown');
    expect((await client.deregister('701.0.0', { reason: 'x' })).kind).toBe('unknown');
  });

  it('unknown (404, unknown_deployment) for a register naming a deployment not served', async () => {
    const client = createWorkerClient({ schedulerUrl: url, workerKey });
    const result = await client.register(registration('702', 0, { deployment: 'other' }));
    expect(result).toMatchObject({
      kind: 'unknown',
      status: 404,
      code: 'unknown_deployment',
      message: 'deployment other is not served by this scheduler',
    });
  });

  it('fenced (409) for an old incarnation, with the scheduler message: exit', async () => {
    const client = createWorkerClient({ schedulerUrl: url, workerKey });
    expect((await client.register(registration('703'))).kind).toBe('ok');
    expect((await client.register(registration('703', 0, { restartCount: 1 }))).kind).toBe('ok');
    const beat = await client.heartbeat('703.0.0', ready);
    expect(beat).toMatchObject({ ok: false, kind: 'fenced', status: 409, code: 'fenced' });
    expect(beat.ok ? '' : beat.message).toMatch(/restart/);
    const again = await client.register(registration('703'));
    expect(again).toMatchObject({ kind: 'fenced', status: 409 });
  });

  it('unauthorized (401, bad_signature) without a key; signed with another key, the answer is ignored', async () => {
    const unsigned = createWorkerClient({ schedulerUrl: url });
    expect(await unsigned.register(registration('704'))).toMatchObject({
      ok: false,
      kind: 'unauthorized',
      status: 401,
      message: expect.stringMatching(/^missing x-es-signature: /) as string,
      code: 'bad_signature',
    });
    // The scheduler's 401 is signed with its key, which this client does not hold.
    const stranger = createWorkerClient({ schedulerUrl: url, workerKey: 'wrong' });
    const result = await stranger.register(registration('704'));
    expect(result).toMatchObject({ ok: false, kind: 'unreachable', unsigned: true });
    expect(result.ok ? '' : result.message).toContain(
      'ignored an answer (HTTP 401) wrongly signed',
    );
    expect(registry.job('704')).toBeUndefined();
  });

  it('rejected (400) with the field the scheduler names', async () => {
    const client = createWorkerClient({ schedulerUrl: url, workerKey });
    const bad = { ...registration('705'), port: 70_000 } as RegisterRequest;
    const result = await client.register(bad);
    expect(result).toMatchObject({ kind: 'rejected', status: 400, code: 'invalid_request' });
    expect(result.ok ? '' : result.message).toMatch(/^invalid port: /);
  });

  it('unreachable when nothing listens, naming the URL', async () => {
    const closed = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
    await new Promise((resolve) => closed.once('listening', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const client = createWorkerClient({ schedulerUrl: `http://127.0.0.1:${port}`, workerKey });
    const result = await client.heartbeat('700.0.0', ready);
    expect(result).toMatchObject({ ok: false, kind: 'unreachable', timedOut: false });
    expect(result.ok ? '' : result.message).toContain(
      `POST http://127.0.0.1:${port}/api/v1/workers/700.0.0/heartbeat: `,
    );
  });
});

describe('the worker client against createWorkerApi in process (app.request)', () => {
  it('gives the same results without a socket', async () => {
    const client = createWorkerClient({
      schedulerUrl: 'http://scheduler.invalid',
      workerKey,
      fetch: (input, init) => app.request(input, init),
    });
    expect(await client.register(registration('710'))).toMatchObject({
      kind: 'ok',
      body: { workerId: '710.0.0' },
    });
    expect((await client.heartbeat('710.0.0', ready)).kind).toBe('ok');
    expect((await client.heartbeat('711.0.0', ready)).kind).toBe('unknown');
  });
});
