/**
 * Scale from zero through a real socket and the official `openai` client: a request for a
 * deployment that may have no node waits in the queue for the cold start
 * (`queue.coldStartTimeoutMs`), past the ordinary `queue.timeoutMs` and past every other
 * timer of the proxy, and is answered with no client retry; at the cold-start limit it gets
 * 503 `no_capacity` with `Retry-After` carrying the node's expected start.
 */
import OpenAI, { APIError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, startProxyServer } from '../src/index.js';
import type { ProxyAppOptions, ProxyRequestRecord } from '../src/index.js';
import { startFakeEngine } from './fake-engine.js';
import { until } from './harness.js';
import { createStaticPool, deploymentView } from './static-pool.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The proxy over deployment `cold` (no worker yet) on a real socket, with short timers. */
async function serve(
  options: Omit<ProxyAppOptions, 'pool'>,
  scalesFromZero = true,
  expectedReadyAt?: number,
) {
  const deployments = [
    deploymentView('cold', 'least-outstanding', {
      ...(scalesFromZero ? { scalesFromZero } : {}),
      ...(expectedReadyAt === undefined ? {} : { expectedReadyAt }),
    }),
  ];
  const pool = createStaticPool(deployments);
  const records: ProxyRequestRecord[] = [];
  const app = createProxyApp({ pool, ...options, onRequestComplete: (r) => records.push(r) });
  // Node's request and headers timeouts far below the wait: they must not cut it.
  const server = await startProxyServer({
    fetch: app.fetch,
    headersTimeoutMs: 400,
    requestTimeoutMs: 500,
  });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  let arrived = 0;
  server.server.on('request', () => arrived++);
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
  return { pool, deployments, app, records, client, arrived: () => arrived };
}

/** The 503 an `openai` call threw, with the time it took. */
async function refusal(call: () => Promise<unknown>) {
  const start = performance.now();
  const error = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  const elapsed = performance.now() - start;
  expect(error).toBeInstanceOf(APIError);
  const api = error as APIError;
  return {
    elapsed,
    status: api.status,
    code: api.code,
    message: api.message,
    retryAfter: api.headers?.get('retry-after'),
  };
}

const chat = (client: OpenAI) =>
  client.chat.completions.create({
    model: 'cold',
    messages: [{ role: 'user', content: 'hi' }],
  });

describe('scale from zero: the cold-start wait', () => {
  it('holds requests past queue.timeoutMs and every other timer until a worker is routable 2 s later; no client retry', async () => {
    const { pool, app, records, client, arrived } = await serve({
      queue: { timeoutMs: 300, coldStartTimeoutMs: 60_000 },
      requestBodyTimeoutMs: 500,
      clientIdleTimeoutMs: 500,
    });
    const start = performance.now();
    // A streamed chat (the continuation relay) and an embedding (the plain forward path).
    const streamed = (async () => {
      let text = '';
      const stream = await client.chat.completions.create({
        model: 'cold',
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
      });
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      return { text, at: performance.now() - start };
    })();
    const embedded = client.embeddings
      .create({ model: 'cold', input: 'x' })
      .then((answer) => ({ answer, at: performance.now() - start }));
    await until(() => app.queueDepth().cold === 2);

    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const engine = await startFakeEngine('w0');
    cleanups.push(() => engine.close());
    pool.add({ id: 'w0', deployment: 'cold', baseUrl: engine.url });

    const [stream, embedding] = await Promise.all([streamed, embedded]);
    expect(stream.text).toBe('t0 t1 t2 ');
    expect(embedding.answer.data).toHaveLength(1);
    for (const at of [stream.at, embedding.at]) expect(at).toBeGreaterThanOrEqual(1_900);
    // One HTTP request each: the client never retried.
    expect(arrived()).toBe(2);
    expect(engine.seen).toHaveLength(2);
    await until(() => records.length === 2);
    for (const record of records) {
      expect(record).toMatchObject({ status: 200, retries: 0 });
      expect(record.queuedMs).toBeGreaterThanOrEqual(1_900);
    }
    expect(app.queueDepth()).toEqual({});
  });

  it('at the cold-start limit answers 503 no_capacity, Retry-After the seconds to the expected start', async () => {
    const { deployments, client, arrived } = await serve({
      queue: { timeoutMs: 100, coldStartTimeoutMs: 1_000, retryAfterSeconds: 7 },
    });
    const answer = refusal(() => chat(client));
    // The expected start becomes known while the request waits (the registry replaces the view).
    await new Promise((resolve) => setTimeout(resolve, 300));
    const expectedReadyAt = Date.now() + 42_000;
    deployments[0] = { ...deployments[0]!, expectedReadyAt };
    const refused = await answer;
    expect(refused).toMatchObject({ status: 503, code: 'no_capacity' });
    expect(refused.message).toMatch(/Waited 1 s for a node of cold to start/);
    expect(refused.elapsed).toBeGreaterThanOrEqual(950);
    expect(refused.elapsed).toBeLessThan(5_000);
    const seconds = Number(refused.retryAfter);
    expect(seconds).toBeGreaterThanOrEqual(40);
    expect(seconds).toBeLessThanOrEqual(42);
    expect(arrived()).toBe(1);
  });

  it('sends queue.retryAfterSeconds when the expected start is unknown or past', async () => {
    for (const expectedReadyAt of [undefined, Date.now() - 10_000]) {
      const { client } = await serve(
        { queue: { timeoutMs: 100, coldStartTimeoutMs: 200, retryAfterSeconds: 7 } },
        true,
        expectedReadyAt,
      );
      const refused = await refusal(() => chat(client));
      expect(refused).toMatchObject({ status: 503, code: 'no_capacity', retryAfter: '7' });
    }
  });

  it('gives a deployment that does not scale from zero the ordinary queue timeout', async () => {
    const { client } = await serve(
      { queue: { timeoutMs: 300, coldStartTimeoutMs: 60_000, retryAfterSeconds: 7 } },
      false,
      Date.now() + 42_000,
    );
    const refused = await refusal(() => chat(client));
    expect(refused).toMatchObject({ status: 503, code: 'no_capacity', retryAfter: '7' });
    expect(refused.message).toMatch(/within 300 ms/);
    expect(refused.elapsed).toBeGreaterThanOrEqual(250);
    expect(refused.elapsed).toBeLessThan(1_900);
  });

  it('counts against queue.maxLength, and a client that leaves ends its wait', async () => {
    const { app, client } = await serve(
      { queue: { timeoutMs: 100, coldStartTimeoutMs: 60_000, maxLength: 1 } },
      true,
      Date.now() + 30_000,
    );
    const leaving = new AbortController();
    const first = client.chat.completions
      .create(
        { model: 'cold', messages: [{ role: 'user', content: 'hi' }] },
        {
          signal: leaving.signal,
        },
      )
      .catch((error: unknown) => error);
    await until(() => app.queueDepth().cold === 1);
    const full = await refusal(() => chat(client));
    expect(full).toMatchObject({ status: 503, code: 'queue_full' });
    expect(Number(full.retryAfter)).toBeGreaterThanOrEqual(28);
    expect(full.elapsed).toBeLessThan(1_000);

    leaving.abort();
    await first;
    await until(() => app.queueDepth().cold === undefined, 2_000);
    expect(app.queueDepth()).toEqual({});
  });
});
