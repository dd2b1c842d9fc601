import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp } from '../src/index.js';
import type { ProxyApp, ProxyAppOptions, ProxyRequestRecord } from '../src/index.js';
import { addFakeWorkers } from './harness.js';
import type { FakeEngine } from './fake-engine.js';
import { createStaticPool, deploymentView } from './static-pool.js';
import type { StaticPool } from './static-pool.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(
  engines = 1,
  options: Omit<ProxyAppOptions, 'pool'> = {},
): Promise<{
  app: ProxyApp;
  pool: StaticPool;
  fakes: FakeEngine[];
  records: ProxyRequestRecord[];
}> {
  const pool = createStaticPool([
    deploymentView('llama', 'least-outstanding', { upstreamApiKey: 'engine-key' }),
  ]);
  const fakes = await addFakeWorkers(pool, 'llama', engines, cleanups);
  const records: ProxyRequestRecord[] = [];
  const app = createProxyApp({ pool, onRequestComplete: (r) => records.push(r), ...options });
  cleanups.push(() => app.close());
  return { app, pool, fakes, records };
}

const chat = (body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

const ask = { model: 'llama', messages: [{ role: 'user', content: 'hi' }] };

describe('bad input never reaches a worker', () => {
  it.each([
    ['invalid JSON', chat('{"model": '), 400, 'invalid_json', null],
    ['a body that is not an object', chat('[1,2]'), 400, 'invalid_request_body', null],
    ['a missing model', chat({ messages: [] }), 400, 'missing_model', 'model'],
    ['a non-string model', chat({ model: 3 }), 400, 'invalid_request_body', 'model'],
    [
      'a wrong content type',
      { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' },
      415,
      'unsupported_media_type',
      null,
    ],
    ['an unknown model', chat({ model: 'gpt-9' }), 404, 'model_not_found', 'model'],
  ])('answers %s with an OpenAI-shaped error', async (_name, init, status, code, param) => {
    const { app, fakes, records } = await setup();
    const res = await app.request('/v1/chat/completions', init);
    expect(res.status).toBe(status);
    const body = (await res.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ code, param, type: 'invalid_request_error' });
    expect(typeof body.error.message).toBe('string');
    expect(res.headers.get('x-request-id')).toMatch(/[0-9a-f-]{36}/);
    expect(fakes[0]!.seen).toHaveLength(0);
    expect(records).toMatchObject([{ status, outcome: 'rejected', errorCode: code }]);
  });

  it('lists the served names for an unknown model', async () => {
    const { app } = await setup();
    const res = await app.request('/v1/completions', chat({ model: 'gpt-9', prompt: 'x' }));
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain("'gpt-9'");
    expect(body.error.message).toContain('llama, /models/llama');
  });

  it('refuses a body over the limit, declared or streamed', async () => {
    const { app, fakes } = await setup(1, { maxBodyBytes: 100 });
    const big = JSON.stringify({ ...ask, padding: 'x'.repeat(200) });
    const declared = await app.request('/v1/chat/completions', chat(big));
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ error: { code: 'request_too_large' } });
    const streamed = await app.request(
      new Request('http://proxy/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new Blob([big]).stream(),
        duplex: 'half',
      } as RequestInit),
    );
    expect(streamed.status).toBe(413);
    expect(fakes[0]!.seen).toHaveLength(0);
  });

  it('answers unknown routes with an OpenAI-shaped 404', async () => {
    const { app } = await setup();
    const res = await app.request('/v1/nothing/here');
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 'unknown_url' } });
  });
});

describe('auth', () => {
  it('needs one of the client keys when keys are configured', async () => {
    const { app, fakes } = await setup(1, { apiKeys: ['sk-one', 'sk-two'] });
    const none = await app.request('/v1/chat/completions', chat(ask));
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { code: 'invalid_api_key' } });
    const wrong = await app.request('/v1/models', {
      headers: { authorization: 'Bearer sk-three' },
    });
    expect(wrong.status).toBe(401);
    expect(fakes[0]!.seen).toHaveLength(0);
    const right = await app.request(
      '/v1/chat/completions',
      chat(ask, { authorization: 'Bearer sk-two' }),
    );
    expect(right.status).toBe(200);
    // The client's key never reaches the engine; the deployment's engine key does.
    expect(fakes[0]!.seen[0]!.headers.authorization).toBe('Bearer engine-key');
  });

  it('lets everyone in when no key is configured', async () => {
    const { app } = await setup();
    const res = await app.request('/v1/chat/completions', chat(ask, { authorization: 'Bearer x' }));
    expect(res.status).toBe(200);
  });
});

describe('forwarding', () => {
  it('passes the original bytes and request id upstream and returns the answer (a request not continued)', async () => {
    const { app, fakes, records } = await setup();
    // n > 1 cannot be continued: the request goes upstream byte for byte.
    const raw = `{"model":"llama",  "messages":[{"role":"user","content":"héllo"}], "extra": 1, "n": 2}`;
    const res = await app.request(
      '/v1/chat/completions?x=1',
      chat(raw, { 'x-request-id': 'req-42' }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('req-42');
    expect(res.headers.get('x-engine')).toBe('w0');
    expect(res.headers.get('x-elastic-selected-worker-id')).toBe('w0');
    // The engine's address is for operators: not sent unless exposeSelectedEndpoint.
    expect(res.headers.get('x-elastic-selected-endpoint')).toBeNull();
    const body = (await res.json()) as { usage: unknown };
    expect(body.usage).toEqual({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    expect(fakes[0]!.seen[0]).toMatchObject({ path: '/v1/chat/completions?x=1', body: raw });
    expect(fakes[0]!.seen[0]!.headers['x-request-id']).toBe('req-42');
    expect(records).toMatchObject([
      {
        requestId: 'req-42',
        deployment: 'llama',
        workerId: 'w0',
        status: 200,
        outcome: 'ok',
        retries: 0,
        promptTokens: 7,
        completionTokens: 3,
        totalTokens: 10,
      },
    ]);
    expect(records[0]!.ttfbMs).toBeGreaterThan(0);
    expect(records[0]!.latencyMs).toBeGreaterThanOrEqual(records[0]!.ttfbMs!);
  });

  it('streams SSE with no-cache, unbuffered headers and reads usage from the last chunk', async () => {
    const { app, records, fakes } = await setup();
    const res = await app.request(
      '/v1/completions',
      chat({ model: '/models/llama', prompt: 'a', stream: true }),
    );
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('x-accel-buffering')).toBe('no');
    const text = await res.text();
    // Three tokens and [DONE]: the usage chunk the proxy asked for is not the client's.
    expect(text.match(/^data: /gm)).toHaveLength(4);
    expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(records[0]).toMatchObject({ stream: true, completionTokens: 3, status: 200 });
    // The engine only knows its served name: the model path is rewritten to it; a
    // continuable generation is asked for its token ids and usage.
    expect(JSON.parse(fakes[0]!.seen[0]!.body)).toEqual({
      model: 'llama',
      prompt: 'a',
      stream: true,
      stream_options: { include_usage: true },
      return_token_ids: true,
    });
    const withUsage = await app.request(
      '/v1/completions',
      chat({ model: 'llama', prompt: 'a', stream: true, stream_options: { include_usage: true } }),
    );
    const usageText = await withUsage.text();
    expect(usageText.match(/^data: /gm)).toHaveLength(5);
    expect(usageText).toContain('"usage":{"prompt_tokens":7');
  });

  it('passes other POST /v1/* routes through to the worker', async () => {
    const { app, fakes } = await setup();
    const res = await app.request('/v1/responses', chat({ model: 'llama', input: 'x' }));
    expect(res.status).toBe(200);
    expect(fakes[0]!.seen[0]!.path).toBe('/v1/responses');
  });

  it('answers /v1/models from the pool with ready capacity, without asking a worker', async () => {
    const { app, fakes } = await setup(2);
    const res = await app.request('/v1/models');
    expect(await res.json()).toMatchObject({
      object: 'list',
      data: [
        { id: 'llama', object: 'model', root: '/models/llama', ready_workers: 2, in_flight: 0 },
      ],
    });
    const one = await app.request('/v1/models//models/llama');
    expect(await one.json()).toMatchObject({ id: 'llama' });
    expect(fakes.every((f) => f.seen.length === 0)).toBe(true);
  });
});

describe('failures before the first byte', () => {
  it.each([
    ['a reset', { kind: 'reset' } as const, 'connect-error'],
    ['a 503', { kind: 'status', status: 503 } as const, 'upstream-5xx'],
  ])('retries %s on another worker', async (_name, mode, outcome) => {
    const { app, pool, fakes, records } = await setup(2);
    fakes[0]!.mode = mode;
    // Random two-choice picks: send until one tried w0 first (a retry), at most 200.
    const results = [];
    for (let i = 0; i < 200 && !records.some((r) => r.retries === 1); i++) {
      results.push(await app.request('/v1/chat/completions', chat(ask)));
    }
    for (const res of results) expect(res.status).toBe(200);
    expect(records.every((r) => r.status === 200)).toBe(true);
    expect(records.some((r) => r.retries === 1)).toBe(true);
    expect(pool.outcomes.some((o) => o.outcome === outcome)).toBe(true);
    expect(pool.all().map((w) => w.inFlight)).toEqual([0, 0]);
  });

  it('retries a non-streaming generation cut mid-way by an engine without token ids (vLLM < 0.10.2)', async () => {
    const { app, fakes, records } = await setup(2);
    // The fakes return no token ids: a cut cannot be continued, but nothing reached the
    // client of a non-streaming request, so it starts again on the other worker.
    fakes[0]!.mode = { kind: 'die-mid-stream', chunksBeforeDeath: 1 };
    for (let i = 0; i < 200 && !records.some((r) => r.retries === 1); i++) {
      const res = await app.request('/v1/chat/completions', chat(ask));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { choices: { message: { content: string } }[] };
      expect(body.choices[0]!.message.content).toBe('t0 t1 t2 ');
    }
    expect(records.some((r) => r.retries === 1 && r.status === 200)).toBe(true);
  });

  it('sends the engine address as x-elastic-selected-endpoint only when asked to (exposeSelectedEndpoint)', async () => {
    const { app } = await setup(1, { exposeSelectedEndpoint: true });
    const res = await app.request('/v1/chat/completions', chat(ask));
    expect(res.headers.get('x-elastic-selected-endpoint')).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('passes a 5xx through when no other worker is left, and 502s when none answers', async () => {
    const { app, fakes, records } = await setup(1);
    fakes[0]!.mode = { kind: 'status', status: 500 };
    const res = await app.request('/v1/chat/completions', chat(ask));
    expect(res.status).toBe(500);
    fakes[0]!.mode = { kind: 'reset' };
    const reset = await app.request('/v1/chat/completions', chat(ask));
    expect(reset.status).toBe(502);
    const error = (await reset.json()) as { error: { code: string; message: string } };
    expect(error).toMatchObject({
      error: { code: 'upstream_unavailable', type: 'server_error' },
    });
    // The worker is named by its id, never by its address.
    expect(error.error.message).toMatch(/^Worker w0 could not be reached/);
    expect(error.error.message).not.toMatch(/127\.0\.0\.1|:\d{2,5}\b/);
    expect(records.map((r) => r.outcome)).toEqual(['ok', 'upstream-error']);
  });

  it('gives up after maxAttempts', async () => {
    const { app, fakes, records } = await setup(3, { retry: { maxAttempts: 2 } });
    for (const fake of fakes) fake.mode = { kind: 'reset' };
    const res = await app.request('/v1/chat/completions', chat(ask));
    expect(res.status).toBe(502);
    expect(fakes.reduce((n, f) => n + f.seen.length, 0)).toBe(2);
    expect(records[0]).toMatchObject({ retries: 1, outcome: 'upstream-error' });
  });
});

describe('no ready worker', () => {
  it('waits in the queue for a worker coming back', async () => {
    const { app, pool, fakes } = await setup(1);
    pool.remove('w0');
    const pending = app.request('/v1/chat/completions', chat(ask));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(app.queueDepth()).toEqual({ llama: 1 });
    pool.add({ id: 'w0-again', deployment: 'llama', baseUrl: fakes[0]!.url });
    expect((await pending).status).toBe(200);
    expect(app.queueDepth()).toEqual({});
  });

  it('answers 503 with Retry-After when the wait times out or the queue is full', async () => {
    const { app, pool, records } = await setup(1, {
      queue: { timeoutMs: 100, maxLength: 1, retryAfterSeconds: 7 },
    });
    pool.remove('w0');
    const first = app.request('/v1/chat/completions', chat(ask));
    const second = await app.request('/v1/chat/completions', chat(ask));
    expect(second.status).toBe(503);
    expect(second.headers.get('retry-after')).toBe('7');
    expect(await second.json()).toMatchObject({ error: { code: 'queue_full' } });
    const timedOut = await first;
    expect(timedOut.status).toBe(503);
    expect(timedOut.headers.get('retry-after')).toBe('7');
    expect(await timedOut.json()).toMatchObject({ error: { code: 'no_capacity' } });
    expect(records.find((r) => r.errorCode === 'no_capacity')!.queuedMs).toBeGreaterThanOrEqual(90);
  });
});

describe('prefix affinity through the app', () => {
  it('keeps a user (or a shared prompt prefix) on one worker', async () => {
    const pool = createStaticPool([deploymentView('llama', 'prefix-affinity')]);
    await addFakeWorkers(pool, 'llama', 4, cleanups);
    const app = createProxyApp({ pool });
    cleanups.push(() => app.close());
    const engineOf = async (body: unknown) =>
      (await app.request('/v1/chat/completions', chat(body))).headers.get('x-engine');
    for (const user of ['alice', 'bob', 'carol']) {
      const first = await engineOf({ ...ask, user });
      for (let i = 0; i < 5; i++) expect(await engineOf({ ...ask, user })).toBe(first);
    }
    const system = { role: 'system', content: 'You are a careful assistant. '.repeat(30) };
    const first = await engineOf({
      model: 'llama',
      messages: [system, { role: 'user', content: 'a' }],
    });
    for (const question of ['b', 'c', 'd']) {
      expect(
        await engineOf({ model: 'llama', messages: [system, { role: 'user', content: question }] }),
      ).toBe(first);
    }
  });
});

describe('options', () => {
  it('refuses nonsensical values with the option named', () => {
    const pool = createStaticPool([deploymentView('llama')]);
    expect(() => createProxyApp({ pool, retry: { maxAttempts: 0 } })).toThrow(/retry.maxAttempts/);
    expect(() => createProxyApp({ pool, queue: { timeoutMs: -1 } })).toThrow(/queue.timeoutMs/);
    expect(() => createProxyApp({ pool, affinity: { loadFactor: 0.5 } })).toThrow(/loadFactor/);
  });
});

describe('timeouts', () => {
  it('answers 504 when a worker sends no headers in time', async () => {
    const { app, fakes, pool } = await setup(1, { upstream: { headersTimeoutMs: 200 } });
    fakes[0]!.mode = { kind: 'hang' };
    const res = await app.request('/v1/chat/completions', chat(ask));
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: { code: 'upstream_timeout' } });
    expect(pool.outcomes).toContainEqual({ workerId: 'w0', outcome: 'timeout' });
  });

  it('ends a stream that goes silent with an error event instead of hanging', async () => {
    const { app, fakes, pool, records } = await setup(1, { upstream: { bodyTimeoutMs: 200 } });
    fakes[0]!.mode = { kind: 'stall-mid-stream', chunksBeforeStall: 2 };
    const res = await app.request('/v1/chat/completions', chat({ ...ask, stream: true }));
    expect(res.status).toBe(200);
    const text = await res.text();
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[2]!.slice(6))).toMatchObject({
      error: { code: 'upstream_stream_interrupted', type: 'server_error' },
    });
    expect(pool.outcomes).toContainEqual({ workerId: 'w0', outcome: 'timeout' });
    expect(records[0]).toMatchObject({ outcome: 'mid-stream-failure' });
    expect(pool.all()[0]!.inFlight).toBe(0);
  });
});
