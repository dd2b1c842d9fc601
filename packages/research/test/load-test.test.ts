import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, test } from 'vitest';
import { encodePrompt } from '@es/mock-engine';
import { mulberry32 } from '../src/dataset.js';
import { runLoadTest } from '../src/load-test.js';
import { makePrompt } from '../src/load-test-prompts.js';
import type { LoadTestReport } from '../src/load-test-report.js';
import { startMock } from './mock.js';
import type { MockEngine } from './mock.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'load-test');
const script = [{ response: 'one two three four five six seven eight' }];

let engine: MockEngine | undefined;
let recorder: Recorder | undefined;
afterEach(async () => {
  await recorder?.close();
  recorder = undefined;
  await engine?.close();
  engine = undefined;
});

interface Recorder {
  url: string;
  /** The JSON body of every POST that went through, in order. */
  bodies: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * A pass-through HTTP server on 127.0.0.1 in front of `target` that keeps each request body:
 * what the load test sent, while the engine behind still answers.
 */
async function startRecorder(target: string): Promise<Recorder> {
  const bodies: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.method === 'POST')
        bodies.push(JSON.parse(body.toString()) as Record<string, unknown>);
      void fetch(`${target}${req.url ?? '/'}`, {
        method: req.method,
        headers: { 'content-type': 'application/json' },
        ...(req.method === 'POST' ? { body } : {}),
      }).then(
        async (upstream) => {
          res.writeHead(upstream.status, {
            'content-type': upstream.headers.get('content-type') ?? '',
          });
          for await (const chunk of upstream.body ?? []) res.write(chunk);
          res.end();
        },
        () => res.destroy(),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bodies,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('runLoadTest against the mock engine', () => {
  test.each([
    ['chat', true],
    ['chat', false],
    ['completions', true],
    ['completions', false],
  ] as const)('%s, streaming %s: counts requests, tokens and latencies', async (api, stream) => {
    engine = await startMock({ script, tokensPerSecond: 2000 });
    const report = await runLoadTest({
      baseURL: `${engine.url}/v1`,
      api,
      stream,
      concurrency: 3,
      requests: 7,
      promptTokens: 20,
      maxTokens: 8,
    });
    expect(report.config).toMatchObject({
      model: 'mock-model',
      api,
      stream,
      concurrency: 3,
      requests: 7,
    });
    expect(report.requests).toEqual({ total: 7, ok: 7, failed: 0 });
    // The report counts what the engine said in `usage`: each of the 7 prompts (seed 1's
    // first 7, whichever lane sent them) as the mock engine tokenizes it, a chat prompt
    // through its chat template; 8 pieces of the scripted answer each.
    const random = mulberry32(1);
    const prompts = Array.from({ length: 7 }, () => makePrompt(20, random));
    const promptTokens = prompts
      .map((prompt) =>
        encodePrompt(
          api === 'chat'
            ? { kind: 'chat', messages: [{ role: 'user', content: prompt }] }
            : { kind: 'completion', prompt },
        ),
      )
      .reduce((n, ids) => n + ids.length, 0);
    expect(report.tokens).toEqual({ prompt: promptTokens, completion: 7 * 8 });
    expect(report.throughput.requestsPerSecond).toBeGreaterThan(0);
    expect(report.latencyMs?.p50).toBeGreaterThan(0);
    if (stream) {
      expect(report.ttftMs?.p50).toBeGreaterThan(0);
      expect(report.ttftMs?.p50).toBeLessThanOrEqual(report.latencyMs?.p50 ?? 0);
    } else {
      expect(report.ttftMs).toBeNull();
    }
    expect(engine.stats().completed).toBe(7);
  });

  test('a duration run keeps sending until the time is up', async () => {
    engine = await startMock({ script, tokensPerSecond: 400 });
    const started = Date.now();
    const report = await runLoadTest({
      baseURL: `${engine.url}/v1`,
      concurrency: 2,
      durationMs: 300,
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(report.requests.total).toBeGreaterThan(2);
    expect(report.config.durationMs).toBe(300);
  });

  test('failures are counted by class', async () => {
    engine = await startMock({ script, failRate: 0.5, seed: 3 });
    const report = await runLoadTest({ baseURL: `${engine.url}/v1`, concurrency: 2, requests: 20 });
    const failed = engine.stats().failed;
    expect(failed).toBeGreaterThan(0);
    expect(report.requests).toEqual({ total: 20, ok: 20 - failed, failed });
    expect(report.errors).toEqual({ http_500: { count: failed, example: expect.any(String) } });
  });

  test('an unreachable endpoint is reported as such', async () => {
    await expect(
      runLoadTest({ baseURL: 'http://127.0.0.1:1/v1', requests: 1, waitTimeoutMs: 0 }),
    ).rejects.toMatchObject({
      code: 'workers_not_ready',
      param: 'wait-timeout',
      message: expect.stringContaining('cannot reach http://127.0.0.1:1/cluster_status'),
    });
  });
});

describe('scripts/load-test (the built CLI as a child process)', () => {
  test('--json prints the report on stdout', async () => {
    engine = await startMock({ script });
    const { stdout } = await run(SCRIPT, [
      '--scheduler-url',
      engine.url,
      '--requests',
      '5',
      '--concurrency',
      '2',
      '--json',
    ]);
    const report = JSON.parse(stdout) as LoadTestReport;
    expect(report.requests).toEqual({ total: 5, ok: 5, failed: 0 });
    expect(report.config.baseURL).toBe(`${engine.url}/v1`);
  });

  test('--temperature goes into every request; --prompt-style natural sends readable questions on the chat API', async () => {
    engine = await startMock({ script });
    recorder = await startRecorder(engine.url);
    const { stdout, stderr } = await run(SCRIPT, [
      '--scheduler-url',
      recorder.url,
      '--num-requests',
      '6',
      '--concurrency',
      '2',
      '--max-tokens',
      '8',
      '--temperature',
      '0.3',
      '--prompt-style',
      'natural',
    ]);
    expect(recorder.bodies).toHaveLength(6);
    for (const body of recorder.bodies) {
      expect(body).toMatchObject({ model: 'mock-model', max_tokens: 8, temperature: 0.3 });
      const messages = body.messages as { role: string; content: string }[];
      expect(messages).toHaveLength(1);
      expect(messages[0]?.role).toBe('user');
      expect(messages[0]?.content).toMatch(/^[A-Z][\w ,'-]+[?.]$/);
    }
    expect(new Set(recorder.bodies.map((b) => JSON.stringify(b.messages))).size).toBeGreaterThan(1);
    expect(stdout).toContain('natural-language questions, max_tokens 8, temperature 0.3');
    expect(stdout).toMatch(/^requests {5}6 ok, 0 failed/m);
    // A bare engine is no scheduler: the banner says so, and nothing is waited for.
    expect(stderr).toContain('cluster      unknown (GET /cluster_status: HTTP 404)\n');
    expect(stderr).toContain('(not an Elastic Serving scheduler): not waiting for workers');
    expect(stderr).not.toContain('waiting for ready workers:');
    expect(stdout).toContain('workers      n/a (no answer named its worker');

    // Without the flags: no temperature, and the synthetic prompt of --prompt-tokens words.
    const before = recorder.bodies.length;
    await run(SCRIPT, ['--scheduler-url', recorder.url, '--requests', '1', '--prompt-tokens', '5']);
    const plain = recorder.bodies[before] as { messages: { content: string }[] };
    expect(plain).not.toHaveProperty('temperature');
    expect(plain.messages[0]?.content.split(' ')).toHaveLength(5);
  });

  test('the text report shows throughput, tokens/s, percentiles and errors', async () => {
    engine = await startMock({ script });
    const { stdout } = await run(SCRIPT, [
      '--scheduler-url',
      engine.url,
      '--requests',
      '4',
      '--no-stream',
    ]);
    expect(stdout).toMatch(/^requests {5}4 ok, 0 failed in [\d.]+ s: [\d.]+ req\/s$/m);
    expect(stdout).toMatch(/^tokens {7}32 completion \([\d.]+ tok\/s\)/m);
    expect(stdout).toMatch(/^latency ms {3}p50 [\d.]+ {2}p90 [\d.]+ {2}p99 [\d.]+/m);
    expect(stdout).toContain('ttft ms      n/a (not streaming)');
    expect(stdout).toContain('errors       none');
  });
});
