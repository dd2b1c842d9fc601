import { request } from 'node:http';
import { connect } from 'node:net';
import { DATA_PLANE_REPORT_MS, clientKeyHash, writeSchedulerUrl } from '@es/protocol';
import OpenAI, { APIError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startDataPlane } from '../src/index.js';
import type { DataPlane, DataPlaneOptions, RoutingJournalEntry } from '../src/index.js';
import {
  MODEL,
  SECRET,
  SETTINGS,
  newRegistry,
  readyEngine,
  startFakeScheduler,
  urlFilePath,
} from './data-plane-harness.js';
import type { Cleanups } from './data-plane-harness.js';
import { until } from './harness.js';

// One data-plane process (what each es-proxy worker runs) against a stand-in scheduler:
// the watch stream of a real registry, the report route, control paths; real mock engines.
const cleanups: Cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function plane(urlFile: string, extra: Partial<DataPlaneOptions> = {}): Promise<DataPlane> {
  const started = await startDataPlane({
    secret: SECRET,
    schedulerUrlFile: urlFile,
    watch: { retry: { initialMs: 50, maxMs: 200 }, silenceMs: 1_000 },
    reportIntervalMs: 50,
    ...extra,
  });
  cleanups.push(() => started.close(0));
  return started;
}

const client = (p: DataPlane, apiKey = 'unused') =>
  new OpenAI({ baseURL: `${p.url}/v1`, apiKey, maxRetries: 0 });

const ask = (p: DataPlane, apiKey?: string) =>
  client(p, apiKey).chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Say something.' }],
    max_tokens: 5,
  });

/** A raw request (any method, streamed body), answered as status, headers and bytes. */
function raw(
  url: string,
  method: string,
  body?: Buffer,
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A ready engine for `job`, a stand-in scheduler naming it, a data plane following it. */
async function serving(
  job: string,
  options: {
    engine?: { tokensPerSecond?: number };
    settings?: typeof SETTINGS;
    plane?: Partial<DataPlaneOptions>;
  } = {},
) {
  const registry = newRegistry();
  const workerId = await readyEngine(registry, job, cleanups, options.engine);
  const scheduler = await startFakeScheduler(registry, cleanups, options.settings);
  const file = urlFilePath(cleanups);
  writeSchedulerUrl(file, scheduler.url);
  const p = await plane(file, options.plane);
  await until(() => p.pool.connected);
  return { registry, workerId, scheduler, file, p };
}

/** The status line of a GET of `target` sent verbatim (no client normalises it). */
function rawPath(port: number, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () =>
      socket.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`),
    );
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    socket.on('end', () => resolve(text.split('\r\n')[0]!));
    socket.on('error', reject);
  });
}

describe('startDataPlane', () => {
  it('serves a chat completion from the watch stream, and /v1/models and /health from its table', async () => {
    const { p, workerId } = await serving('101');

    const answer = await ask(p);
    expect(answer.choices[0]!.message.content).toBeTruthy();
    const models = await client(p).models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    const health = await raw(`${p.url}/health`, 'GET');
    expect(health.status).toBe(200);
    // The scheduler's body, field for field; this process's table in headers.
    expect(JSON.parse(health.body.toString())).toEqual({ status: 'ok', ready_workers: 1 });
    expect(health.headers['x-es-subscribed']).toBe('true');
    expect(Number(health.headers['x-es-table-version'])).toBe(p.pool.version);
    expect(p.pool.routable('qwen').map((w) => w.id)).toEqual([workerId]);
  });

  it('journals its routing table and attempts for reliability runs (ES_ROUTING_JOURNAL)', async () => {
    const entries: RoutingJournalEntry[] = [];
    const { p, workerId } = await serving('109', {
      plane: { journal: (entry) => entries.push(entry) },
    });
    await ask(p);
    // The worker entering this process's table, then the attempt that served the request.
    expect(entries.map((e) => [e.type, e.workerId])).toEqual([
      ['route', workerId],
      ['attempt', workerId],
    ]);
    expect(entries[0]).toMatchObject({ routable: true });
  });

  it('with firstTableWaitMs: listens only once its first routing table has arrived', async () => {
    const registry = newRegistry();
    await readyEngine(registry, '108', cleanups);
    const scheduler = await startFakeScheduler(registry, cleanups);
    const file = urlFilePath(cleanups);
    let started = false;
    const starting = plane(file, { firstTableWaitMs: Infinity }).then((p) => ((started = true), p));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(started).toBe(false);

    writeSchedulerUrl(file, scheduler.url);
    const p = await starting;
    expect(p.pool.version).toBeDefined();
    // Its first answer is served, not a 503.
    expect((await ask(p)).choices).toHaveLength(1);
  });

  it('answers /v1 with 503 no_routing_table before the first snapshot, then serves', async () => {
    const registry = newRegistry();
    await readyEngine(registry, '102', cleanups);
    const scheduler = await startFakeScheduler(registry, cleanups);
    const file = urlFilePath(cleanups);
    const p = await plane(file);

    const refused = await ask(p).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(APIError);
    expect((refused as APIError).status).toBe(503);
    expect((refused as APIError).code).toBe('no_routing_table');

    writeSchedulerUrl(file, scheduler.url);
    await until(() => p.pool.connected);
    expect((await ask(p)).choices).toHaveLength(1);
  });

  it('keeps serving /v1 from its table when the scheduler is gone (static stability)', async () => {
    const { p, scheduler } = await serving('103');

    await scheduler.close();
    await until(() => !p.pool.connected);
    for (let i = 0; i < 3; i++) expect((await ask(p)).choices).toHaveLength(1);
  });

  it('checks client keys by their hash: 401 without the key, 200 with it', async () => {
    const settings = { ...SETTINGS, clientKeyHashes: [clientKeyHash('sk-client-key')] };
    const { p } = await serving('104', { settings });

    const refused = await ask(p, 'sk-wrong').catch((error: unknown) => error);
    expect((refused as APIError).status).toBe(401);
    expect((refused as APIError).code).toBe('invalid_api_key');
    const none = await raw(`${p.url}/v1/models`, 'GET');
    expect(none.status).toBe(401);
    expect((await ask(p, 'sk-client-key')).choices).toHaveLength(1);
  });

  it('serves with the settings of a later snapshot when they differ (a client key added)', async () => {
    const { p, scheduler, registry, file } = await serving('107');
    expect((await ask(p)).choices).toHaveLength(1);

    // The scheduler restarts elsewhere with --api-key set: its snapshot carries the hash.
    await scheduler.close();
    const settings = { ...SETTINGS, clientKeyHashes: [clientKeyHash('sk-now-required')] };
    const restarted = await startFakeScheduler(registry, cleanups, settings);
    writeSchedulerUrl(file, restarted.url);
    await until(() => p.pool.settings?.clientKeyHashes.length === 1);
    const refused = await ask(p).catch((error: unknown) => error);
    expect((refused as APIError).status).toBe(401);
    expect((await ask(p, 'sk-now-required')).choices).toHaveLength(1);
  });

  it('forwards other paths to the control listener (bodies streamed), 503 scheduler_unreachable when it is down', async () => {
    const { p, scheduler } = await serving('105');

    const metrics = await raw(`${p.url}/metrics`, 'GET');
    expect(metrics.status).toBe(200);
    expect(metrics.body.toString()).toContain('es_fake_metric 1');
    const big = Buffer.alloc(8 * 1024 * 1024, 'x');
    const echoed = await raw(`${p.url}/api/v1/echo`, 'POST', big);
    expect(echoed.status).toBe(200);
    expect(echoed.headers['x-echo']).toBe('yes');
    expect(echoed.body.equals(big)).toBe(true);

    // A target that would resolve to another host stays a path of the control listener.
    const sneaky = await rawPath(p.port, '//example.invalid/metrics');
    expect(sneaky).toMatch(/^HTTP\/1\.1 404 /);

    await scheduler.close();
    const down = await raw(`${p.url}/metrics`, 'GET');
    expect(down.status).toBe(503);
    const error = (JSON.parse(down.body.toString()) as { error: { code: string; message: string } })
      .error;
    expect(error.code).toBe('scheduler_unreachable');
    expect(error.message).toMatch(/routing table version \d+/);
    // /v1 is still served from the table.
    expect((await ask(p)).choices).toHaveLength(1);
  });

  it('reports signed, with in-flight requests and records; records of an outage arrive after it', async () => {
    const { p, scheduler, workerId, registry, file } = await serving('106', {
      engine: { tokensPerSecond: 20 },
      plane: { maxRecords: 2 },
    });

    // A slow stream is in flight on the worker while reports go out.
    const stream = await client(p).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Count.' }],
      max_tokens: 20,
      stream: true,
    });
    await until(() => scheduler.reports.some((r) => r.inFlight[workerId] === 1));
    for await (const chunk of stream) void chunk;
    await until(() => scheduler.reports.some((r) => r.requests.length > 0));
    expect(scheduler.refused).toBe(0);
    const first = scheduler.reports.find((r) => r.requests.length > 0)!;
    expect(first.requests[0]).toMatchObject({ path: '/v1/chat/completions', stream: true });
    expect(first).toMatchObject({ subscribed: true, droppedRecords: 0, pid: process.pid });
    expect(first.listen).toBe(p.url);
    const seqs = scheduler.reports.map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));

    // The scheduler goes away; three requests are answered from the table meanwhile.
    await scheduler.close();
    const during = await Promise.all([1, 2, 3].map(() => ask(p)));
    expect(during).toHaveLength(3);
    // It comes back on another port and says so in the URL file.
    const back = await startFakeScheduler(registry, cleanups);
    writeSchedulerUrl(file, back.url);
    await until(() => back.reports.some((r) => r.requests.length > 0));
    const after = back.reports.find((r) => r.requests.length > 0)!;
    // Two kept (maxRecords), the third counted.
    expect(after.requests).toHaveLength(2);
    expect(after.droppedRecords).toBe(1);
    expect(back.reports.flatMap((r) => r.requests)).toHaveLength(2);
  });
});

describe('startDataPlane: a deployment scaled to zero', () => {
  /** `qwen` may have no node (`minNodes` 0) and has none; the cold-start wait from settings. */
  async function cold(coldStartTimeoutMs: number) {
    const registry = newRegistry();
    registry.addDeployment({ ...registry.deploymentConfig('qwen')!, minNodes: 0 });
    const scheduler = await startFakeScheduler(registry, cleanups, {
      ...SETTINGS,
      coldStartTimeoutMs,
    });
    const file = urlFilePath(cleanups);
    writeSchedulerUrl(file, scheduler.url);
    // The reports at their default interval: what the scheduler's demand sees.
    const p = await plane(file, { reportIntervalMs: DATA_PLANE_REPORT_MS });
    await until(() => p.pool.connected);
    return { registry, scheduler, p };
  }

  it('reports a waiting request as queued within 2 s, and answers it once a worker is ready', async () => {
    const { registry, scheduler, p } = await cold(60_000);
    const start = performance.now();
    const answer = ask(p);
    await until(() => scheduler.reports.some((r) => r.queued?.qwen === 1), 2_000);
    expect(performance.now() - start).toBeLessThan(2_000);

    await readyEngine(registry, '601', cleanups);
    expect((await answer).choices[0]!.message.content).toBeTruthy();
    // The next report has nothing waiting.
    const seen = scheduler.reports.length;
    await until(() => scheduler.reports.length > seen, 3_000);
    expect(scheduler.reports.at(-1)!.queued).toEqual({});
  });

  it('at the cold-start limit answers 503 with Retry-After from the expected start the watch carried', async () => {
    const { registry, p } = await cold(1_000);
    const start = performance.now();
    const answer = ask(p).then(
      () => undefined,
      (error: unknown) => error,
    );
    await until(() => p.pool.deployments()[0]?.scalesFromZero === true);
    registry.setDeploymentExpectedReady('qwen', Date.now() + 42_000);
    await until(() => p.pool.deployments()[0]?.expectedReadyAt !== undefined, 1_000);
    const error = await answer;
    expect(error).toBeInstanceOf(APIError);
    const refused = error as APIError;
    expect(refused.status).toBe(503);
    expect(refused.code).toBe('no_capacity');
    const seconds = Number(refused.headers?.get('retry-after'));
    expect(seconds).toBeGreaterThanOrEqual(39);
    expect(seconds).toBeLessThanOrEqual(42);
    // The cold-start wait of the settings (1 s), not the queue's ordinary 30 s.
    expect(performance.now() - start).toBeLessThan(10_000);
  });
});
