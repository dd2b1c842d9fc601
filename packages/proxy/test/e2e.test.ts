import { Hono } from 'hono';
import { request } from 'node:http';
import { connect } from 'node:net';
import OpenAI, { APIError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, startProxyServer } from '../src/index.js';
import type { ProxyRequestRecord } from '../src/index.js';
import { startFakeEngine } from './fake-engine.js';
import { addFakeWorkers, until } from './harness.js';
import { createStaticPool, deploymentView } from './static-pool.js';
import type { StaticPool } from './static-pool.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(engines: number, apiKeys: string[] = []) {
  const pool: StaticPool = createStaticPool([deploymentView('llama')]);
  const fakes = await addFakeWorkers(pool, 'llama', engines, cleanups);
  const records: ProxyRequestRecord[] = [];
  const app = createProxyApp({ pool, apiKeys, onRequestComplete: (r) => records.push(r) });
  const server = await startProxyServer({ fetch: app.fetch });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  const client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: apiKeys[0] ?? 'none',
    maxRetries: 0,
  });
  let arrived = 0;
  server.server.on('request', () => arrived++);
  return { pool, fakes, records, client, url: server.url, arrived: () => arrived };
}

describe('the openai client through a real socket', () => {
  it('does chat, completions, embeddings and models, streaming and not', async () => {
    const { client, records } = await serve(2, ['sk-test']);
    const completion = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(completion.choices[0]!.message.content).toBe('t0 t1 t2 ');
    const stream = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: unknown;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      usage ??= chunk.usage ?? undefined;
    }
    expect(text).toBe('t0 t1 t2 ');
    expect(usage).toMatchObject({ completion_tokens: 3 });
    const legacy = await client.completions.create({ model: '/models/llama', prompt: 'x' });
    expect(legacy.choices[0]!.text).toBe('t0 t1 t2 ');
    let streamed = '';
    for await (const chunk of await client.completions.create({
      model: 'llama',
      prompt: 'x',
      stream: true,
    })) {
      streamed += chunk.choices[0]?.text ?? '';
    }
    expect(streamed).toBe('t0 t1 t2 ');
    const embedding = await client.embeddings.create({ model: 'llama', input: 'x' });
    expect(embedding.data[0]!.embedding.map((v) => Math.round(v * 10) / 10)).toEqual([
      0.1, 0.2, 0.3,
    ]);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['llama']);
    await until(() => records.length === 5);
    expect(records.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  });

  it('rejects a wrong key with a 401 the client understands', async () => {
    const { url } = await serve(1, ['sk-test']);
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-nope', maxRetries: 0 });
    const error = await wrong.models.list().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).status).toBe(401);
    expect((error as APIError).code).toBe('invalid_api_key');
  });

  it('answers 200 when the first worker dies before answering', async () => {
    const { client, fakes, pool } = await serve(2);
    fakes[0]!.mode = { kind: 'reset' };
    // Random two-choice picks: send until one tried w0 first (and was retried), at most 200.
    const failed = () => pool.outcomes.some((o) => o.outcome === 'connect-error');
    for (let i = 0; i < 200 && (i < 10 || !failed()); i++) {
      const messages = [{ role: 'user' as const, content: 'hi' }];
      if (i % 2 === 0) {
        let text = '';
        const stream = await client.chat.completions.create({
          model: 'llama',
          messages,
          stream: true,
        });
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
        expect(text).toBe('t0 t1 t2 ');
      } else {
        const answer = await client.chat.completions.create({ model: 'llama', messages });
        expect(answer.choices[0]!.message.content).toBe('t0 t1 t2 ');
      }
    }
    expect(pool.outcomes.filter((o) => o.outcome === 'connect-error').length).toBeGreaterThan(0);
  });

  it('ends a stream whose worker dies with an error event, and reports the worker', async () => {
    const { client, fakes, pool, records } = await serve(1);
    fakes[0]!.mode = { kind: 'die-mid-stream', chunksBeforeDeath: 2 };
    const stream = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    const seen: string[] = [];
    const error = await (async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? '');
    })().catch((e: unknown) => e);
    expect(seen).toEqual(['t0 ', 't1 ']);
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).code).toBe('upstream_stream_interrupted');
    expect(pool.outcomes).toContainEqual({ workerId: 'w0', outcome: 'mid-stream-failure' });
    await until(() => records.length === 1);
    expect(records[0]).toMatchObject({ outcome: 'mid-stream-failure', status: 200 });
    expect(pool.all()[0]!.inFlight).toBe(0);
  });

  it('cancels the upstream request the moment the client goes away', async () => {
    const { client, fakes, pool, records } = await serve(1);
    fakes[0]!.chunks = 1000;
    fakes[0]!.chunkIntervalMs = 20;
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'llama', messages: [{ role: 'user', content: 'hi' }], stream: true },
      { signal: controller.signal },
    );
    const cancelled = fakes[0]!.nextCancel();
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const abortedAt = Date.now();
    controller.abort();
    await cancelled;
    expect(Date.now() - abortedAt).toBeLessThan(500);
    await until(() => records.length === 1);
    expect(records[0]).toMatchObject({ outcome: 'client-abort', status: 499 });
    expect(pool.all()[0]!.inFlight).toBe(0);
  });

  it('cancels a request that is still waiting for the engine to answer', async () => {
    const { url, fakes, pool } = await serve(1);
    fakes[0]!.mode = { kind: 'hang' };
    const controller = new AbortController();
    const cancelled = fakes[0]!.nextCancel();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [] }),
      signal: controller.signal,
    }).catch(() => undefined);
    await until(() => fakes[0]!.seen.length === 1);
    controller.abort();
    await cancelled;
    await pending;
    await until(() => pool.all()[0]!.inFlight === 0);
  });

  it('moves a request off a worker lost while it waits (hung engine) and ends a started stream with an error event', async () => {
    const { client, fakes, pool, records } = await serve(2);
    fakes[0]!.mode = { kind: 'hang' };
    fakes[1]!.mode = { kind: 'hang' };
    const pending = client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
    });
    await until(() => fakes[0]!.seen.length + fakes[1]!.seen.length === 1);
    const stuck = fakes[0]!.seen.length === 1 ? 0 : 1;
    const other = 1 - stuck;
    fakes[other]!.mode = { kind: 'ok' };
    const lostAt = performance.now();
    pool.lose(pool.all()[stuck]!.id, 'engine not answering /health (3 probes in a row)');
    const completion = await pending;
    expect(performance.now() - lostAt).toBeLessThan(500);
    expect(completion.choices[0]!.message.content).toBe('t0 t1 t2 ');
    expect(records.at(-1)).toMatchObject({ outcome: 'ok', retries: 1 });
    expect(pool.all().map((w) => w.inFlight)).toEqual([0]);

    // A stream already sending when its worker is lost: an error event, then the end.
    fakes[other]!.chunks = 1_000;
    fakes[other]!.chunkIntervalMs = 20;
    const stream = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    pool.lose(pool.all()[0]!.id, 'no heartbeat for 30 s');
    await expect(
      (async () => {
        for (;;) if ((await iterator.next()).done) return;
      })(),
    ).rejects.toThrow(/stopped serving: no heartbeat for 30 s/);
    await until(() => records.length === 2);
    expect(records[1]).toMatchObject({ outcome: 'mid-stream-failure' });
  });

  it('returns every in-flight count to zero after a burst with failures and aborts', async () => {
    const { url, fakes, pool, records, arrived } = await serve(3);
    fakes[0]!.mode = { kind: 'reset' };
    fakes[1]!.mode = { kind: 'die-mid-stream', chunksBeforeDeath: 1 };
    // 1 s per stream: a client walking away after its first bytes does so mid-stream even
    // on a busy machine (at 5 ms a chunk the whole answer could be read before it left).
    fakes[2]!.chunks = 20;
    fakes[2]!.chunkIntervalMs = 50;
    const requests = Array.from({ length: 120 }, async (_, i) => {
      const controller = new AbortController();
      if (i % 4 === 0) setTimeout(() => controller.abort(), 5 + (i % 20));
      try {
        const res = await fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'llama', messages: [], stream: i % 2 === 0 }),
          signal: controller.signal,
        });
        if (i % 8 === 2 && res.body) {
          // A stream the client walks away from after its first bytes: reached the proxy for sure.
          const reader = res.body.getReader();
          await reader.read();
          controller.abort();
          await reader.read().catch(() => undefined);
        } else {
          await res.text();
        }
      } catch {
        // aborted on purpose
      }
    });
    await Promise.all(requests);
    // Requests aborted before they reached the proxy (timed aborts) leave no record; every
    // other request arrived.
    await until(() => records.length === arrived());
    expect(arrived()).toBeGreaterThanOrEqual(90);
    expect(pool.all().map((w) => w.inFlight)).toEqual([0, 0, 0]);
    const outcomes = new Set(records.map((r) => r.outcome));
    expect(outcomes).toContain('ok');
    expect(outcomes).toContain('mid-stream-failure');
    expect(outcomes).toContain('client-abort');
  });
});

describe('backpressure', () => {
  it('stops reading the worker while the client is not reading, and loses nothing (a request not continued: bytes piped as they are)', async () => {
    const { url, fakes } = await serve(1);
    const total = 64 * 1024 * 1024;
    fakes[0]!.mode = { kind: 'flood', bytes: total };
    const received = await new Promise<{ paused: number; bytes: number }>((resolve, reject) => {
      const req = request(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        res.pause();
        setTimeout(() => {
          const paused = fakes[0]!.flooded();
          let bytes = 0;
          res.on('data', (chunk: Buffer) => (bytes += chunk.length));
          res.on('end', () => resolve({ paused, bytes }));
          res.resume();
        }, 500);
      });
      // n > 1 cannot be continued: the answer is piped byte for byte.
      req.end(JSON.stringify({ model: 'llama', stream: true, n: 2 }));
    });
    // Socket buffers on both sides hold a few MB; without backpressure all 64 MB would be
    // read from the worker into the proxy's memory within the pause.
    expect(received.paused).toBeLessThan(24 * 1024 * 1024);
    expect(received.bytes).toBe(total);
  });
});

describe('mounted in a parent app (as apps/scheduler does)', () => {
  it('keeps the parent routes and the proxy routes, errors and streaming', async () => {
    const pool = createStaticPool([deploymentView('llama')]);
    const fake = await startFakeEngine('w0');
    cleanups.push(() => fake.close());
    pool.add({ id: 'w0', deployment: 'llama', baseUrl: fake.url });
    const proxy = createProxyApp({ pool, apiKeys: ['sk-test'] });
    const parent = new Hono();
    parent.get('/health', (c) => c.json({ status: 'ok' }));
    parent.route('/', proxy);
    const server = await startProxyServer({ fetch: parent.fetch });
    cleanups.push(async () => {
      await server.close(0);
      await proxy.close();
    });
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok' });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-test', maxRetries: 0 });
    let text = '';
    for await (const chunk of await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    })) {
      text += chunk.choices[0]?.delta.content ?? '';
    }
    expect(text).toBe('t0 t1 t2 ');
    const missing = await client.chat.completions
      .create({ model: 'nope', messages: [] })
      .catch((e: unknown) => e);
    expect((missing as APIError).status).toBe(404);
    expect((missing as APIError).code).toBe('model_not_found');
    const unknown = await fetch(`${server.url}/v1/unknown`, {
      headers: { authorization: 'Bearer sk-test' },
    });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'unknown_url' } });
  });
});

describe('slow request bodies on a real socket', () => {
  it('answers 408 request_timeout and closes the connection when the body does not arrive in time', async () => {
    const pool: StaticPool = createStaticPool([deploymentView('llama')]);
    const fakes = await addFakeWorkers(pool, 'llama', 1, cleanups);
    const app = createProxyApp({ pool, requestBodyTimeoutMs: 300 });
    const server = await startProxyServer({ fetch: app.fetch });
    cleanups.push(async () => {
      await server.close(0);
      await app.close();
    });
    const { port } = new URL(server.url);
    const startedAt = performance.now();
    const { answer, closed } = await new Promise<{ answer: string; closed: boolean }>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1');
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (text += d));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve({ answer: text, closed: true }));
      // Promises 1,000 bytes, sends one a second (a slow-loris upload).
      socket.write(
        'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
          'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{',
      );
      const drip = setInterval(() => socket.write(' '), 1_000);
      socket.on('close', () => clearInterval(drip));
    });
    expect(closed).toBe(true);
    expect(performance.now() - startedAt).toBeLessThan(2_000);
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as unknown;
    expect(body).toMatchObject({
      error: { code: 'request_timeout', message: 'The request body did not arrive within 0.3 s.' },
    });
    expect(fakes[0]!.seen).toHaveLength(0);
  });
});
