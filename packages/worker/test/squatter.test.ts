/**
 * Another user of the cluster binds the scheduler's port while the scheduler is down and
 * answers 409, 200 or 404 to everything. A real worker (mock engine) must ignore every
 * answer (they are not signed), keep its engine serving, never exit, and send nothing the
 * squatter can reuse: no header or body holds a derived key, and the squatter's recorded
 * requests replayed to a real worker API are refused.
 */
import { serve } from '@hono/node-server';
import type { ServerType } from '@hono/node-server';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRegistry, createWorkerApi } from '@es/pool';
import type { Registry } from '@es/pool';
import { deriveEngineKey, deriveKeys, derivedSecrets } from '@es/protocol';
import { createWorker } from '../src/index.js';

const SECRET = 'squatter-test-secret';
const JOB = '1234';
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function closeServer(server: Server | ServerType): Promise<void> {
  return new Promise((resolve) => {
    (server as Server).closeAllConnections();
    server.close(() => resolve());
  });
}

/** The real scheduler side: a registry and its worker API, on `port` (0: any). */
async function startScheduler(port: number) {
  const registry: Registry = createRegistry({
    deployments: [
      {
        name: 'default',
        model: 'mock-model',
        engine: 'mock',
        tensorParallelSize: 1,
        gpusPerNode: 1,
        maxNodes: 1,
      },
    ],
    heartbeatIntervalMs: 150,
  });
  const api = createWorkerApi(registry, { workerKey: deriveKeys(SECRET).workerKey });
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: api.fetch, hostname: '127.0.0.1', port }, () => resolve(s));
  });
  const bound = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await closeServer(server);
  };
  cleanups.push(close);
  return { registry, port: bound, url: `http://127.0.0.1:${bound}`, close };
}

interface Recorded {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** Answers every request with `answer` (changeable), recording what it receives. */
async function startSquatter(port: number) {
  const recorded: Recorded[] = [];
  const squatter = {
    recorded,
    answer: { status: 409, body: {} as unknown },
    close: () => Promise.resolve(),
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      recorded.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: Object.fromEntries(
          Object.entries(req.headers).map(([name, value]) => [name, String(value)]),
        ),
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(squatter.answer.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(squatter.answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  let closed = false;
  squatter.close = async () => {
    if (closed) return;
    closed = true;
    await closeServer(server);
  };
  cleanups.push(squatter.close);
  return { ...squatter, port: (server.address() as AddressInfo).port, set: squatter };
}

const FENCED = { error: { message: 'exit now', type: 'conflict', param: null, code: 'fenced' } };
const UNKNOWN = {
  error: { message: 'who?', type: 'not_found', param: null, code: 'unknown_worker' },
};

/** One request on a connection of its own (the in-process worker shares fetch's pool). */
function post(
  port: number,
  path: string,
  headers: Record<string, string>,
  body: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function until(test: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('a squatter on the scheduler port', () => {
  it('cannot register, fence or stop a real worker, and gets nothing it can replay', async () => {
    // The squatter holds the port before the worker starts: its 200 must register nothing.
    const first = await startSquatter(0);
    const port = first.port;
    const url = `http://127.0.0.1:${port}`;
    first.set.answer = { status: 200, body: { workerId: `${JOB}.0.0`, heartbeatIntervalMs: 100 } };
    const warnings: string[] = [];
    const worker = createWorker({
      schedulerUrl: url,
      deployment: 'default',
      engine: 'mock',
      model: 'mock-model',
      jobId: JOB,
      restartCount: 0,
      basePort: 0,
      gpusPerNode: 1,
      visibleDevices: '',
      secret: SECRET,
      logDir: mkdtempSync(join(tmpdir(), 'es-squatter-test-')),
      probeIntervalMs: 50,
      restartBackoffMs: 50,
      drainGraceMs: 2000,
      killGraceMs: 2000,
      engineExtraArgs: '--tokens-per-second 0 --ttft 0',
      logger: {
        info: () => undefined,
        error: () => undefined,
        warn: (_fields, message) => warnings.push(message),
      },
    });
    cleanups.push(async () => {
      worker.killEnginesSync();
      await worker.stop('test cleanup');
    });
    let exited = false;
    void worker.done.then(() => {
      exited = true;
    });
    const starting = worker.start();
    const registrations = () => first.recorded.filter((r) => r.url.endsWith('/register')).length;
    await until(() => registrations() >= 2, 'two registration attempts at the squatter');
    expect(worker.instances()[0]?.workerId).toBeUndefined();
    // Its 409 to a registration fences nothing either.
    first.set.answer = { status: 409, body: FENCED };
    const seen = registrations();
    await until(() => registrations() > seen, 'a registration answered 409');
    expect(exited).toBe(false);
    expect(warnings).toContain(
      'ignored an unsigned answer (not from the scheduler); retrying registration',
    );

    // The real scheduler comes up on the port: the worker registers there.
    await first.close();
    const real = await startScheduler(port);
    await starting;
    await until(
      () => real.registry.worker(`${JOB}.0.0`)?.state === 'ready',
      'the worker ready at the real scheduler',
    );

    // The scheduler restarts; a squatter takes the port in between, answering 409, 200, 404.
    await real.close();
    const second = await startSquatter(port);
    const heartbeats = () => second.recorded.filter((r) => r.url.endsWith('/heartbeat')).length;
    for (const answer of [
      { status: 409, body: FENCED },
      { status: 200, body: { ok: true } },
      { status: 404, body: UNKNOWN },
    ]) {
      second.set.answer = answer;
      const before = heartbeats();
      await until(() => heartbeats() >= before + 3, `three heartbeats answered ${answer.status}`);
    }
    // A 404 unsigned is no reason to register again.
    expect(second.recorded.filter((r) => r.url.endsWith('/register'))).toEqual([]);
    expect(exited).toBe(false);
    expect(warnings).toContain('ignored an unsigned heartbeat answer (not from the scheduler)');
    // The engine kept serving all along.
    const instance = worker.instances()[0];
    expect(instance?.state).toBe('ready');
    const completion = await fetch(`http://127.0.0.1:${instance?.port}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${deriveEngineKey(SECRET, JOB)}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({
        model: 'mock-model',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 2,
      }),
    });
    expect(completion.status).toBe(200);

    // Nothing the squatters received holds the secret or a key derived from it.
    const recorded = [...first.recorded, ...second.recorded];
    // At least three registrations and nine heartbeats.
    expect(recorded.length).toBeGreaterThanOrEqual(12);
    const secrets = derivedSecrets(SECRET, [JOB]);
    const leaks = recorded.flatMap((r) =>
      [...Object.entries(r.headers), ['body', r.body] as const]
        .filter(([, value]) => secrets.some((s) => value === s || value.includes(s)))
        .map(([name]) => `${r.url} ${name}`),
    );
    expect(leaks).toEqual([]);
    expect(recorded.filter((r) => r.headers.authorization !== undefined)).toEqual([]);

    // What they recorded, replayed to the restarted scheduler, is refused, every request.
    await second.close();
    const restarted = await startScheduler(port);
    const replays: string[] = [];
    for (const r of recorded) {
      // Every header but the connection's own (host, length, keep-alive): fetch sets those.
      const headers = Object.fromEntries(
        Object.entries(r.headers).filter(
          ([name]) => name.startsWith('x-') || name === 'content-type',
        ),
      );
      const answer = await post(port, r.url, headers, r.body);
      const body = JSON.parse(answer.body) as { error?: { code?: string } };
      replays.push(`${answer.status} ${body.error?.code}`);
    }
    expect(replays).toEqual(recorded.map(() => '401 stale'));
    // The worker itself gets through: the new scheduler's 404 (signed) makes it register again.
    await until(
      () => restarted.registry.worker(`${JOB}.0.0`)?.state === 'ready',
      'the worker registered again at the restarted scheduler',
    );
    expect(exited).toBe(false);
  });
});
