import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import OpenAI, { APIError } from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createProxyApp, startProxyServer } from '../src/index.js';
import type { ContinuationRecord, ProxyRequestRecord } from '../src/index.js';
import { MOCK_ENGINE_CLI, spawnMockEngine } from './engine-process.js';
import { until } from './harness.js';
import { createStaticPool, deploymentView } from './static-pool.js';
import type { StaticPool } from './static-pool.js';

// Real mock-engine processes (the project's vLLM stand-in), as workers would run them.
const ENGINE_KEY = 'es-engine-test-key';

interface EngineProcess {
  child: ChildProcess;
  url: string;
  metric(name: string): Promise<number>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  const built =
    existsSync(MOCK_ENGINE_CLI) && readFileSync(MOCK_ENGINE_CLI, 'utf8').includes('listening on');
  if (!built) throw new Error('build the mock engine first: pnpm --filter @es/mock-engine build');
});

async function startEngine(...flags: string[]): Promise<EngineProcess> {
  const { child, url } = await spawnMockEngine(
    ['--served-model-name', 'llama', '--api-key', ENGINE_KEY, ...flags],
    cleanups,
  );
  return {
    child,
    url,
    async metric(name) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(name));
      return Number(line?.split(' ').pop());
    },
  };
}

async function serve(
  engines: EngineProcess[],
  routing: 'least-outstanding' | 'round-robin' = 'least-outstanding',
  continuation: { deadlineMs?: number } = {},
) {
  const pool: StaticPool = createStaticPool([
    deploymentView('llama', routing, {
      modelNames: ['llama', 'mock-model'],
      upstreamApiKey: ENGINE_KEY,
    }),
  ]);
  engines.forEach((engine, i) =>
    pool.add({ id: `job${i}.0.0`, deployment: 'llama', baseUrl: engine.url }),
  );
  const records: ProxyRequestRecord[] = [];
  const continuations: ContinuationRecord[] = [];
  const app = createProxyApp({
    pool,
    continuation,
    onRequestComplete: (r) => records.push(r),
    onContinuation: (r) => continuations.push(r),
  });
  const server = await startProxyServer({ fetch: app.fetch });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  return { pool, records, client, continuations };
}

const messages = [{ role: 'user' as const, content: 'Say something.' }];

describe('@es/proxy in front of real mock-engine workers', () => {
  it('serves chat, completions, embeddings and models, streaming and not, via the openai client', async () => {
    const engines = [
      await startEngine('--tokens-per-second', '0', '--ttft', '0'),
      await startEngine('--tokens-per-second', '0', '--ttft', '0'),
    ];
    const { client, records } = await serve(engines);
    const chat = await client.chat.completions.create({ model: 'llama', messages, max_tokens: 8 });
    expect(chat.choices[0]!.message.content!.length).toBeGreaterThan(0);
    let streamed = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of await client.chat.completions.create({
      model: 'llama',
      messages,
      max_tokens: 8,
      stream: true,
      stream_options: { include_usage: true },
    })) {
      streamed += chunk.choices[0]?.delta.content ?? '';
      usage = chunk.usage ?? usage;
    }
    expect(streamed.length).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBe(8);
    const completion = await client.completions.create({
      model: 'mock-model',
      prompt: 'Once',
      max_tokens: 4,
    });
    expect(completion.choices[0]!.text.length).toBeGreaterThan(0);
    let text = '';
    for await (const chunk of await client.completions.create({
      model: 'llama',
      prompt: 'Once',
      max_tokens: 4,
      stream: true,
    })) {
      text += chunk.choices[0]?.text ?? '';
    }
    expect(text.length).toBeGreaterThan(0);
    const embedding = await client.embeddings.create({ model: 'llama', input: 'hello' });
    expect(embedding.data[0]!.embedding).toHaveLength(384);
    const models = await client.models.list();
    expect(models.data).toMatchObject([{ id: 'llama', root: '/models/llama' }]);
    await until(() => records.length === 5);
    expect(records.every((r) => r.status === 200)).toBe(true);
    expect(records.find((r) => r.stream && r.path === '/v1/chat/completions')).toMatchObject({
      completionTokens: 8,
    });
  });

  it('answers 200 when the worker it picked is killed before answering', async () => {
    const healthy = await startEngine('--tokens-per-second', '0', '--ttft', '0');
    const doomed = await startEngine('--ttft', '10000');
    // Round robin's first pick is the second worker: the doomed one.
    const { client, pool, records } = await serve([healthy, doomed], 'round-robin');
    const answer = client.chat.completions.create({ model: 'llama', messages, max_tokens: 4 });
    await until(async () => (await doomed.metric('vllm:num_requests_running')) === 1);
    doomed.child.kill('SIGKILL');
    const completion = await answer;
    expect(completion.choices[0]!.message.content!.length).toBeGreaterThan(0);
    await until(() => records.length === 1);
    expect(records[0]).toMatchObject({ status: 200, workerId: 'job0.0.0' });
    // vLLM (and the mock) open a chat stream with the prompt's ids before the first token:
    // from then on the generation is continued (with no generated ids yet), not retried.
    expect(records[0]!.retries + (records[0]!.continuations ?? 0)).toBe(1);
    expect(pool.outcomes).toContainEqual({ workerId: 'job1.0.0', outcome: 'mid-stream-failure' });
  });

  it('ends the stream with an error event when the worker is killed mid-stream and no other can continue it', async () => {
    const engine = await startEngine('--tokens-per-second', '20', '--ttft', '0');
    const { client, pool, continuations } = await serve([engine], 'least-outstanding', {
      deadlineMs: 300,
    });
    const stream = await client.chat.completions.create({
      model: 'llama',
      messages,
      max_tokens: 200,
      stream: true,
    });
    let chunks = 0;
    const error = await (async () => {
      for await (const _chunk of stream) {
        if (++chunks === 3) engine.child.kill('SIGKILL');
      }
    })().catch((e: unknown) => e);
    expect(chunks).toBeGreaterThanOrEqual(3);
    expect(chunks).toBeLessThan(200);
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).code).toBe('upstream_stream_interrupted');
    expect(pool.outcomes).toContainEqual({ workerId: 'job0.0.0', outcome: 'mid-stream-failure' });
    expect(pool.all()[0]!.inFlight).toBe(0);
    expect(continuations).toMatchObject([{ outcome: 'failed', reason: 'no-worker' }]);
  });

  it('stops the generation on the engine when the client aborts', async () => {
    const engine = await startEngine('--tokens-per-second', '20', '--ttft', '0');
    const { client, pool, records } = await serve([engine]);
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'llama', messages, max_tokens: 1000, stream: true },
      { signal: controller.signal },
    );
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    expect(await engine.metric('vllm:num_requests_running')).toBe(1);
    controller.abort();
    await until(async () => (await engine.metric('mock:requests_aborted_total')) === 1, 2000);
    expect(await engine.metric('vllm:num_requests_running')).toBe(0);
    await until(() => records.length === 1);
    expect(records[0]).toMatchObject({ outcome: 'client-abort', status: 499 });
    expect(pool.all()[0]!.inFlight).toBe(0);
  });
});
