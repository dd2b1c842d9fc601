import { mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMockEngine } from '@es/mock-engine';
import type { MockEngine } from '@es/mock-engine';
import OpenAI from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createEngineFront } from '../src/engine-front.js';
import type { EngineFront } from '../src/engine-front.js';

// Built at run time: no file holds a key-shaped string (the security tests scan readable
// files, among them vitest's transformed copies of test files, for `es-engine-<hex>`).
const KEY = `es-engine-${'0123456789abcdef'.repeat(2)}`;
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A mock engine on a Unix socket (its key as vLLM's VLLM_API_KEY) behind a front. */
async function engineBehindFront(): Promise<{
  engine: MockEngine;
  front: EngineFront;
  url: string;
}> {
  const socketPath = join(mkdtempSync(join(tmpdir(), 'es-')), 'engine-0.sock');
  const engine = createMockEngine({ model: 'mock-model', apiKey: KEY, tokensPerSecond: 200 });
  await engine.listenUnix(socketPath);
  const front = createEngineFront({
    host: '127.0.0.1',
    key: KEY,
    endpoint: () => ({ socketPath }),
  });
  const port = await front.listen(0);
  cleanups.push(
    () => engine.close(),
    () => front.close(),
  );
  return { engine, front, url: `http://127.0.0.1:${port}` };
}

/** One raw request (any method, path and headers); the status and body. */
function send(
  url: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method: options.method ?? 'GET', headers: options.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

// Every path a vLLM engine has (vLLM checks its key on /v1/* only), and one it has not.
const PATHS = [
  ['GET', '/health'],
  ['GET', '/metrics'],
  ['GET', '/v1/models'],
  ['POST', '/v1/chat/completions'],
  ['POST', '/v1/completions'],
  ['POST', '/v1/embeddings'],
  ['POST', '/invocations'],
  ['POST', '/tokenize'],
  ['POST', '/detokenize'],
  ['POST', '/pooling'],
  ['POST', '/score'],
  ['POST', '/rerank'],
  ['GET', '/no-such-path'],
] as const;
const BODY = JSON.stringify({
  model: 'mock-model',
  prompt: 'hi',
  messages: [{ role: 'user', content: 'hi' }],
  input: 'hi',
  tokens: [104, 105],
});

describe('the engine front', () => {
  it.each([
    ['no key', {}],
    ['a wrong key', { authorization: 'Bearer es-engine-not-this-one' }],
    ['the key in another scheme', { authorization: `Basic ${KEY}` }],
    ['a forged Host with no key', { host: 'localhost' }],
    ['a forged Host with a wrong key', { host: 'localhost:8000', authorization: 'Bearer x' }],
  ])(
    'refuses every path with %s (401, OpenAI-shaped, nothing of the engine)',
    async (_, headers) => {
      const { url, engine } = await engineBehindFront();
      for (const [method, path] of PATHS) {
        const answer = await send(url, path, {
          method,
          headers: { 'content-type': 'application/json', ...headers },
          body: method === 'POST' ? BODY : undefined,
        });
        expect({ path, status: answer.status }).toEqual({ path, status: 401 });
        expect(JSON.parse(answer.body)).toMatchObject({
          error: { type: 'invalid_request_error', code: 'invalid_api_key' },
        });
      }
      expect(engine.stats().requests).toEqual({});
    },
  );

  it('forwards every path with the key, streams included, and the engine still checks it', async () => {
    const { url } = await engineBehindFront();
    const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
    expect((await send(url, '/health', { headers: auth })).status).toBe(200);
    expect((await send(url, '/metrics', { headers: auth })).body).toContain(
      'vllm:num_requests_running',
    );
    const tokens = await send(url, '/tokenize', { method: 'POST', headers: auth, body: BODY });
    expect(JSON.parse(tokens.body)).toMatchObject({ count: expect.any(Number) });
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 8,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text.length).toBeGreaterThan(0);
  });

  it('a client that leaves mid-stream ends the generation on the engine', async () => {
    const { url, engine } = await engineBehindFront();
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      {
        model: 'mock-model',
        messages: [{ role: 'user', content: 'go' }],
        max_tokens: 2000,
        stream: true,
      },
      { signal: controller.signal },
    );
    for await (const _chunk of stream) {
      expect(engine.stats().running).toBe(1);
      controller.abort();
    }
    await vi.waitFor(() => expect(engine.stats()).toMatchObject({ running: 0, aborted: 1 }), {
      timeout: 5_000,
    });
  });

  it('counts an inference request in flight from its start to the end of its answer', async () => {
    const { url, front, engine } = await engineBehindFront();
    const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
    await send(url, '/metrics', { headers: auth });
    expect(front.inFlight).toBe(0);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'count me' }],
      max_tokens: 100,
      stream: true,
    });
    // While the engine still generates: on a busy machine the client may read the last
    // chunks only after the whole answer went through the front.
    const during: number[] = [];
    for await (const _chunk of stream) {
      if (engine.stats().running === 1) during.push(front.inFlight);
    }
    expect(during.length).toBeGreaterThan(1);
    expect(new Set(during)).toEqual(new Set([1]));
    await vi.waitFor(() => expect(front.inFlight).toBe(0), { timeout: 2_000 });
  });

  it('binds the port it was given, or any free one when that is taken', async () => {
    const first = await engineBehindFront();
    const taken = Number(new URL(first.url).port);
    const front = createEngineFront({ host: '127.0.0.1', key: KEY, endpoint: () => undefined });
    cleanups.push(() => front.close());
    const port = await front.listen(taken);
    expect(port).not.toBe(taken);
    expect(port).toBeGreaterThan(0);
    // No engine running: refused as such, with the key.
    const answer = await send(`http://127.0.0.1:${port}`, '/health', {
      headers: { authorization: `Bearer ${KEY}` },
    });
    expect(answer.status).toBe(503);
  });
});
