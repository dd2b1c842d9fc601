import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, test } from 'vitest';
import { encodePrompt } from '@es/mock-engine';
import { mulberry32 } from '../src/dataset.js';
import { makePrompt, runLoadTest } from '../src/load-test.js';
import type { LoadTestReport } from '../src/load-test.js';
import { startMock } from './mock.js';
import type { MockEngine } from './mock.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'load-test');
const script = [{ response: 'one two three four five six seven eight' }];

let engine: MockEngine | undefined;
afterEach(async () => {
  await engine?.close();
  engine = undefined;
});

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
      runLoadTest({ baseURL: 'http://127.0.0.1:1/v1', requests: 1 }),
    ).rejects.toMatchObject({
      code: 'ENGINE_FAILED',
      field: '--scheduler-url',
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
