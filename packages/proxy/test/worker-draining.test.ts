/**
 * A worker that drains while the scheduler cannot tell anyone: its PoolView still lists it,
 * but its engine front refuses new requests (503 `worker_draining`, `x-es-draining: 1`).
 * Two real `es-worker` processes (real fronts, mock engines), the scheduler unreachable, the
 * proxy on a real socket with no retries at all, driven by the official openai client: every
 * request succeeds on the other worker, the draining one is tried once and then left out of
 * this process's routing, and that refusal counts as no failure for passive ejection.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRegistry, createRoutingWatchServer } from '@es/pool';
import type { PoolView, Registry, RoutingChange } from '@es/pool';
import { WORKER_DRAINING, deriveEngineKey, deriveKeys, writeSchedulerUrl } from '@es/protocol';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, createRoutingWatchClient, startProxyServer } from '../src/index.js';
import type { RoutingJournalEntry } from '../src/index.js';
import { until } from './harness.js';
import { registerReadyWorker } from './registry-worker.js';
import { SETTINGS } from './watch-settings.js';

/** The built `es-worker` (run as SLURM jobs run it). */
const WORKER_CLI = fileURLToPath(new URL('../../../apps/worker/dist/cli.mjs', import.meta.url));
const SECRET = 'worker-draining-test-secret-0123456789abcdef';
const MODEL = '/models/qwen';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A port nothing listens on: the scheduler's, while it is down. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface WorkerProcess {
  port: number;
  url: string;
  key: string;
  /** SIGTERM: the worker drains (its in-flight requests may finish for 20 s). */
  drain(): void;
}

/** One `es-worker` of job `jobId` with one mock engine; resolves once its engine is ready. */
async function startWorker(jobId: string, schedulerUrl: string): Promise<WorkerProcess> {
  const dir = tempDir(`es-drain-${jobId}-`);
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('ES_')),
  );
  const child = spawn(
    process.execPath,
    [
      WORKER_CLI,
      ...['--scheduler-url', schedulerUrl, '--secret-file', secretFile],
      ...['--engine', 'mock', '--model', MODEL, '--deployment', 'qwen'],
      ...['--job-id', jobId, '--base-port', '0', '--gpus-per-node', '1', '--host', '127.0.0.1'],
      ...['--log-dir', join(dir, 'logs'), '--drain-grace', '20', '--handover-margin', '1'],
      '--engine-extra-args=--tokens-per-second 100 --ttft 0',
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const scan = (data: Buffer) => {
      out += data.toString();
      const ready = /"port":(\d+),"msg":"engine 0 ready"/.exec(out);
      if (ready !== null) resolve(Number(ready[1]));
    };
    child.stdout.on('data', scan);
    child.stderr.on('data', scan);
    child.once('exit', (code) => reject(new Error(`es-worker exited with ${code}: ${out}`)));
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    key: deriveEngineKey(SECRET, jobId),
    drain: () => child.kill('SIGTERM'),
  };
}

function newRegistry(): Registry {
  return createRegistry({
    deployments: [
      {
        name: 'qwen',
        model: MODEL,
        engine: 'mock',
        tensorParallelSize: 1,
        gpusPerNode: 1,
        maxNodes: 4,
        // Round robin in registration order: the first request goes to the second worker.
        routing: 'round-robin',
      },
    ],
    upstreamKey: ({ jobId }) => deriveEngineKey(SECRET, jobId),
    // One failure would eject: a draining refusal counted as one would show.
    ejectAfterFailures: 1,
  });
}

/** The data plane's own PoolView: the registry's table through the watch stream. */
async function watchedPool(registry: Registry): Promise<PoolView & { close(): void }> {
  const { dataPlaneKey } = deriveKeys(SECRET);
  const watch = createRoutingWatchServer({
    pool: registry,
    key: dataPlaneKey,
    heartbeatMs: 200,
    dataPlane: () => SETTINGS,
  });
  const server = createServer((req, res) => {
    if (!watch.handle(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        watch.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const file = join(tempDir('es-drain-url-'), 'control-url');
  writeSchedulerUrl(file, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const client = createRoutingWatchClient({
    urlFile: file,
    key: dataPlaneKey,
    engineKey: (jobId) => deriveEngineKey(SECRET, jobId),
    ejectAfterFailures: 1,
  });
  cleanups.push(() => client.close());
  await until(() => client.connected);
  return client;
}

/**
 * One of four kinds of request: relayed (continuable: i % 4 < 2, a streamed chat or a
 * completion) or piped byte for byte (a streamed chat asking for structured output, which
 * is not continued, or embeddings).
 */
async function ask(client: OpenAI, i: number): Promise<string> {
  const messages = [{ role: 'user' as const, content: `request ${i}` }];
  switch (i % 4) {
    case 0:
    case 2: {
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: 4,
        stream: true,
        ...(i % 4 === 2 ? { response_format: { type: 'json_object' as const } } : {}),
      });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      return text;
    }
    case 1: {
      const answer = await client.completions.create({
        model: MODEL,
        prompt: `request ${i}`,
        max_tokens: 4,
      });
      return answer.choices[0]?.text ?? '';
    }
    default: {
      const answer = await client.embeddings.create({ model: MODEL, input: `request ${i}` });
      return answer.data[0]?.embedding.length ? 'embedded' : '';
    }
  }
}

/**
 * SIGTERM `worker` while a long generation runs on it (which keeps its front up for the
 * drain grace); resolves once its front refuses new requests as a draining one.
 */
async function drainWhileBusy(worker: WorkerProcess): Promise<void> {
  const direct = new OpenAI({ baseURL: `${worker.url}/v1`, apiKey: worker.key });
  const long = new AbortController();
  const inFlight = await direct.completions.create(
    { model: MODEL, prompt: 'long', max_tokens: 3000, stream: true },
    { signal: long.signal },
  );
  const reading = (async () => {
    for await (const _chunk of inFlight) void _chunk;
  })().catch(() => undefined);
  cleanups.push(() => {
    long.abort();
    return reading;
  });
  worker.drain();
  await until(async () => {
    const answer = await fetch(`${worker.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${worker.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 1 }),
    });
    await answer.body?.cancel();
    return answer.status === 503 && answer.headers.get(WORKER_DRAINING.header) === '1';
  });
}

type Attempt = Extract<RoutingJournalEntry, { type: 'attempt' }>;

/** The proxy on a real socket over `pool`, with no retries at all; its attempts journaled. */
async function proxyWithoutRetries(
  pool: PoolView,
): Promise<{ client: OpenAI; attempts: Attempt[] }> {
  const attempts: Attempt[] = [];
  const app = createProxyApp({
    pool,
    // Only a refusal that is not a failed attempt can go elsewhere.
    retry: { maxAttempts: 1, budgetRatio: 0, minRetriesPerSecond: 0 },
    journal: (entry) => {
      if (entry.type === 'attempt') attempts.push(entry);
    },
  });
  const server = await startProxyServer({ fetch: app.fetch });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
  return { client, attempts };
}

describe.each([
  ['a data-plane process (its table from the watch stream)', 'watch'],
  ['the scheduler (its registry in process)', 'registry'],
] as const)('a worker draining unbeknown to the scheduler, for %s', (_name, kind) => {
  it.each([
    ['relayed (continuable)', 0],
    ['piped', 2],
  ])(
    '50 %s requests succeed on the other worker; the draining one is tried once, then left out, not ejected',
    async (_path, first) => {
      const schedulerUrl = `http://127.0.0.1:${await closedPort()}`;
      const [draining, serving] = await Promise.all([
        startWorker('71', schedulerUrl),
        startWorker('72', schedulerUrl),
      ]);
      const registry = newRegistry();
      const servingId = registerReadyWorker(registry, '72', serving.port);
      const drainingId = registerReadyWorker(registry, '71', draining.port);
      const pool = kind === 'watch' ? await watchedPool(registry) : registry;
      const changes: RoutingChange[] = [];
      pool.onRoutingChange?.((change) => changes.push(change));
      const { client, attempts } = await proxyWithoutRetries(pool);
      await drainWhileBusy(draining);
      // The control plane never heard of the drain: it still routes to both.
      expect(registry.routable('qwen').map((w) => w.id)).toEqual([servingId, drainingId]);

      for (let i = first; i < first + 50; i++) {
        expect(await ask(client, i)).not.toBe('');
      }

      const on = (id: string) => attempts.filter((a) => a.workerId === id).length;
      expect(on(drainingId)).toBe(1);
      // The first request went there first, and on from there.
      expect(attempts.slice(0, 2).map((a) => [a.workerId, a.attempt])).toEqual([
        [drainingId, 1],
        [servingId, 2],
      ]);
      expect(on(servingId)).toBe(50);
      expect(pool.routable('qwen').map((w) => w.id)).toEqual([servingId]);
      const left = changes.filter((c) => c.workerId === drainingId);
      expect(left).toHaveLength(1);
      expect(left[0]!.routable).toBe(false);
      expect(left[0]!.reason).toMatch(/draining/);
      expect(left[0]!.reason).not.toMatch(/eject|failed/);
      // The serving worker never left routing.
      expect(changes.filter((c) => c.workerId === servingId)).toEqual([]);
      if (kind === 'watch') {
        // Out of this process's table only: the scheduler's registry still routes to it.
        expect(registry.routable('qwen').map((w) => w.id)).toEqual([servingId, drainingId]);
      }
    },
  );
});

describe('a request refused by the only worker, which drains', () => {
  it.each([
    ['relayed (continuable)', 1],
    ['piped', 3],
  ])(
    'a %s request waits for a worker, as when none is routable, and succeeds on the next one',
    async (_path, kind) => {
      const schedulerUrl = `http://127.0.0.1:${await closedPort()}`;
      const [draining, serving] = await Promise.all([
        startWorker('81', schedulerUrl),
        startWorker('82', schedulerUrl),
      ]);
      const registry = newRegistry();
      const drainingId = registerReadyWorker(registry, '81', draining.port);
      const { client, attempts } = await proxyWithoutRetries(registry);
      await drainWhileBusy(draining);

      const answer = ask(client, kind);
      // Refused: the worker left routing, the request waits in the queue.
      await until(() => registry.routable('qwen').length === 0);
      expect(attempts).toHaveLength(1);
      // A new worker becomes routable: the waiting request goes there.
      const servingId = registerReadyWorker(registry, '82', serving.port);
      expect(await answer).not.toBe('');
      expect(attempts.map((a) => [a.workerId, a.attempt])).toEqual([
        [drainingId, 1],
        [servingId, 2],
      ]);
    },
  );
});
