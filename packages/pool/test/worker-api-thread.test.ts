/**
 * The worker protocol served from its own thread (startWorkerApiThread, the built
 * dist/worker-api-thread.mjs): the same answers as the API on the main thread, and
 * heartbeats answered while the main thread is blocked. The heartbeats come from another
 * process, as a worker's do, so that blocking this thread does not also stop the sender.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { WORKER_API_PREFIX, createWorkerClient, deriveKeys, signWorkerRequest } from '@es/protocol';
import { createRegistry, createWorkerApi, startWorkerApiThread } from '../src/index.js';
import { deployment, registration, serveOnLoopback } from './helpers.js';

const { workerKey } = deriveKeys('a shared secret');
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function threadFor(
  registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 }),
) {
  const warnings: string[] = [];
  const api = await startWorkerApiThread(registry, {
    workerKey,
    host: '127.0.0.1',
    port: 0,
    logger: { warn: (_fields, message) => warnings.push(message) },
  });
  cleanups.push(() => api.close());
  const url = `http://127.0.0.1:${api.port}`;
  return {
    registry,
    api,
    url,
    warnings,
    client: createWorkerClient({ schedulerUrl: url, workerKey }),
  };
}

const until = async <T>(probe: () => T | undefined, ms = 5_000): Promise<T> => {
  const end = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

/**
 * In another process: a heartbeat of `workerId` to `url` every 50 ms for `ms`; prints
 * "go" once the first is answered, then the latencies and statuses as JSON.
 */
const SENDER = `
import { createWorkerClient } from '@es/protocol';
const [url, key, workerId, ms] = process.argv.slice(1);
const client = createWorkerClient({ schedulerUrl: url, workerKey: key, timeoutMs: 10000 });
const beats = [];
const end = Date.now() + Number(ms);
let first = true;
while (Date.now() < end) {
  const started = performance.now();
  const result = await client.heartbeat(workerId, { state: 'ready', restartCount: 0 });
  beats.push({ ms: Math.round(performance.now() - started), kind: result.kind });
  if (first) { process.stdout.write('go\\n'); first = false; }
  await new Promise((resolve) => setTimeout(resolve, 50));
}
process.stdout.write(JSON.stringify(beats) + '\\n');
`;

/** Runs the sender; blocks this thread for `blockMs` once it has started. */
async function heartbeatsWhileBlocked(url: string, workerId: string, blockMs: number) {
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', SENDER, url, workerKey, workerId, String(blockMs + 1_000)],
    // Resolves @es/protocol as this package does.
    { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await until(() => (out.startsWith('go\n') ? true : undefined), 10_000);
  // The whole thread stops: no timer, no socket, no message is handled meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, blockMs);
  await new Promise((resolve) => child.once('exit', resolve));
  const beats = JSON.parse(out.slice(3)) as { ms: number; kind: string }[];
  return beats;
}

describe('the worker API in its own thread', () => {
  it('registers, heartbeats, drains, hands over and deregisters as the main-thread API does', async () => {
    const { registry, client } = await threadFor();
    const registered = await client.register(registration('600', 0, { port: 9600 }));
    expect(registered).toMatchObject({
      kind: 'ok',
      body: { workerId: '600.0.0', heartbeatIntervalMs: 1000 },
    });
    expect(await client.heartbeat('600.0.0', { state: 'ready', restartCount: 0 })).toMatchObject({
      kind: 'ok',
    });
    // Answered from the table, applied on this thread right after.
    await until(() => (registry.worker('600.0.0')?.state === 'ready' ? true : undefined));
    expect(registry.routable('m').map((w) => w.id)).toContain('600.0.0');
    expect(
      await client.handover({ workerIds: ['600.0.0'], reason: 'SIGTERM', stopInMs: 5000 }),
    ).toMatchObject({
      kind: 'ok',
      body: { handedOver: ['600.0.0'] },
    });
    expect(registry.routable('m').map((w) => w.id)).not.toContain('600.0.0');
    expect(await client.deregister('600.0.0', { reason: 'exit 0' })).toMatchObject({ kind: 'ok' });
    expect(registry.worker('600.0.0')?.state).toBe('gone');
  });

  it('answers an unknown worker 404 and an old incarnation 409, from the registry', async () => {
    const { client } = await threadFor();
    expect(await client.heartbeat('601.0.0', { state: 'ready', restartCount: 0 })).toMatchObject({
      kind: 'unknown',
      status: 404,
      code: 'unknown_worker',
    });
    await client.register(registration('602', 0, { restartCount: 2 }));
    // The table has it as incarnation 2: incarnation 1's heartbeat is the registry's to fence.
    expect(await client.heartbeat('602.1.0', { state: 'ready', restartCount: 1 })).toMatchObject({
      kind: 'fenced',
      status: 409,
      code: 'fenced',
    });
  });

  it('refuses unsigned requests (401) and logs the refusal through the given logger', async () => {
    const { url, warnings } = await threadFor();
    const response = await fetch(`${url}${WORKER_API_PREFIX}/603.0.0/heartbeat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ state: 'ready', restartCount: 0 }),
    });
    expect(response.status).toBe(401);
    await until(() => (warnings.some((w) => w.includes('bad_signature')) ? true : undefined));
  });

  it('refuses a request signed for another port (relayed from a squatter) with 401 wrong_audience', async () => {
    const { url, client, api } = await threadFor();
    await client.register(registration('606'));
    const send = (audience: string) => {
      const path = `${WORKER_API_PREFIX}/606.0.0/heartbeat`;
      const body = JSON.stringify({ state: 'ready', restartCount: 0 });
      return fetch(`${url}${path}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...signWorkerRequest(workerKey, { method: 'POST', path, body, audience }),
        },
        body,
      });
    };
    const relayed = await send(String(api.port + 1));
    expect(relayed.status).toBe(401);
    expect(await relayed.json()).toMatchObject({ error: { code: 'wrong_audience' } });
    // The same request signed for this port passes: the audience is what was refused.
    expect((await send(String(api.port))).status).toBe(200);
  });

  it('closes connections past its cap at once; the open ones keep working', async () => {
    const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
    const api = await startWorkerApiThread(registry, {
      workerKey,
      host: '127.0.0.1',
      port: 0,
      maxConnections: 2,
    });
    cleanups.push(() => api.close());
    const sockets = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<Socket>((resolve) => {
            const socket = connect(api.port, '127.0.0.1', () => resolve(socket));
          }),
      ),
    );
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
    });
    // Accepted by the kernel, then closed by the server with nothing read or written.
    const third = connect(api.port, '127.0.0.1');
    const closed = await new Promise<boolean>((resolve) => {
      third.on('close', () => resolve(true));
      third.on('error', () => undefined);
      setTimeout(() => resolve(false), 3_000);
    });
    expect(closed).toBe(true);
    // One of the two open connections still gets an answer.
    sockets[0]!.write(`GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const [answer] = (await once(sockets[0]!, 'data')) as [Buffer];
    expect(answer.toString()).toMatch(/^HTTP\/1\.1 404/);
  });

  it('fails to start on a port in use, naming EADDRINUSE', async () => {
    const { api } = await threadFor();
    const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
    await expect(
      startWorkerApiThread(registry, { workerKey, host: '127.0.0.1', port: api.port }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('answers every heartbeat of a worker in service within 500 ms while the main thread is blocked for 2 s', async () => {
    const { registry, client, url } = await threadFor();
    await client.register(registration('604'));
    const before = Date.now();
    const beats = await heartbeatsWhileBlocked(url, '604.0.0', 2_000);
    expect(beats.length).toBeGreaterThan(20);
    expect(beats.every((b) => b.kind === 'ok')).toBe(true);
    expect(Math.max(...beats.map((b) => b.ms))).toBeLessThan(500);
    // Applied once the thread ran again.
    await until(() =>
      (registry.worker('604.0.0')?.lastHeartbeat ?? 0) > before + 2_000 ? true : undefined,
    );
    expect(registry.worker('604.0.0')?.state).toBe('ready');
  }, 30_000);

  it('hands over, on receivePending, the heartbeats this thread has not handled yet', async () => {
    const { registry, client, url, api } = await threadFor();
    await client.register(registration('607'));
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', SENDER, url, workerKey, '607.0.0', '3000'],
      { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    cleanups.push(async () => {
      child.kill('SIGKILL');
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await until(() => (out.startsWith('go\n') ? true : undefined), 10_000);
    const blockedAt = Date.now();
    // Heartbeats arrive and are answered meanwhile; none is handled on this thread.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_000);
    // Still synchronous: no event-loop turn has run since the block.
    const before = registry.worker('607.0.0')?.lastHeartbeat ?? 0;
    api.receivePending();
    const after = registry.worker('607.0.0')?.lastHeartbeat ?? 0;
    // Without receivePending the registry would judge from a heartbeat older than the block.
    expect(before).toBeLessThanOrEqual(blockedAt);
    expect(after).toBeGreaterThanOrEqual(blockedAt + 1_000);
  }, 30_000);

  it('(planted) the same heartbeats to the API on the blocked main thread wait for it', async () => {
    const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
    const served = await serveOnLoopback(createWorkerApi(registry, { workerKey }).fetch);
    cleanups.push(() => served.close());
    await createWorkerClient({ schedulerUrl: served.url, workerKey }).register(registration('605'));
    const beats = await heartbeatsWhileBlocked(served.url, '605.0.0', 2_000);
    expect(Math.max(...beats.map((b) => b.ms))).toBeGreaterThan(1_000);
  }, 30_000);
});
