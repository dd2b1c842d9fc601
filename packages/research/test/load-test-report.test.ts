import OpenAI from 'openai';
import { describe, expect, test } from 'vitest';
import { makePrompt, makeQuestion } from '../src/load-test-prompts.js';
import { formatLoadTestReport, percentile, summarizeLoadTest } from '../src/load-test-report.js';
import type { LoadTestReport, RequestSample } from '../src/load-test-report.js';
import { classifyError } from '../src/load-test-request.js';
import { mulberry32 } from '../src/dataset.js';

const config: LoadTestReport['config'] = {
  baseURL: 'http://127.0.0.1:8780/v1',
  model: 'mock-model',
  api: 'chat',
  stream: true,
  concurrency: 4,
  requests: 5,
  promptStyle: 'synthetic',
  promptTokens: 16,
  maxTokens: 8,
};

const ok = (latencyMs: number, ttftMs: number): RequestSample => ({
  ok: true,
  latencyMs,
  ttftMs,
  promptTokens: 16,
  completionTokens: 8,
});

describe('percentile (nearest rank)', () => {
  test.each([
    [[], 50, 0],
    [[5], 99, 5],
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50, 5],
    [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 90, 9],
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99, 10],
  ])('%j p%d = %d', (values, p, expected) => {
    expect(percentile(values, p)).toBe(expected);
  });
});

describe('summarizeLoadTest', () => {
  const samples: RequestSample[] = [
    ok(100, 10),
    ok(200, 20),
    ok(300, 30),
    ok(400, 40),
    {
      ok: false,
      latencyMs: 5,
      promptTokens: 0,
      completionTokens: 0,
      errorClass: 'http_503',
      errorMessage: '503 no workers',
    },
    {
      ok: false,
      latencyMs: 5,
      promptTokens: 0,
      completionTokens: 0,
      errorClass: 'http_503',
      errorMessage: '503 again',
    },
    {
      ok: false,
      latencyMs: 9,
      promptTokens: 0,
      completionTokens: 0,
      errorClass: 'timeout',
      errorMessage: 'timed out',
    },
  ];
  const report = summarizeLoadTest(samples, 2_000, config);

  test('counts throughput, tokens and errors by class from successful requests', () => {
    expect(report.requests).toEqual({ total: 7, ok: 4, failed: 3 });
    expect(report.throughput).toEqual({
      requestsPerSecond: 2,
      outputTokensPerSecond: 16,
      totalTokensPerSecond: 48,
    });
    expect(report.tokens).toEqual({ prompt: 64, completion: 32 });
    expect(report.errors).toEqual({
      http_503: { count: 2, example: '503 no workers' },
      timeout: { count: 1, example: 'timed out' },
    });
  });

  test('latency and TTFT percentiles', () => {
    expect(report.latencyMs).toEqual({
      p50: 200,
      p90: 400,
      p99: 400,
      mean: 250,
      min: 100,
      max: 400,
    });
    expect(report.ttftMs).toMatchObject({ p50: 20, p90: 40 });
    expect(summarizeLoadTest(samples, 1000, { ...config, stream: false }).ttftMs).toBeNull();
    expect(summarizeLoadTest([], 1000, config).latencyMs).toBeNull();
  });

  test('the text report shows every figure a user looks for', () => {
    const text = formatLoadTestReport(report);
    expect(text).toContain('load test: 5 requests, concurrency 4, chat, streaming');
    expect(text).toContain('requests     4 ok, 3 failed in 2.00 s: 2 req/s');
    expect(text).toContain('tokens       32 completion (16 tok/s), 64 prompt (48 total tok/s)');
    expect(text).toContain('latency ms   p50 200  p90 400  p99 400  mean 250  min 100  max 400');
    expect(text).toContain('ttft ms      p50 20');
    expect(text).toContain(
      'errors       http_503 x2 (503 no workers)\n             timeout x1 (timed out)',
    );
  });
});

describe('classifyError', () => {
  test('names HTTP statuses, timeouts, connection failures and broken streams', () => {
    const headers = new Headers();
    expect(classifyError(OpenAI.APIError.generate(429, {}, 'slow', headers))).toBe('http_429');
    expect(classifyError(OpenAI.APIError.generate(503, {}, 'down', headers))).toBe('http_503');
    expect(classifyError(new OpenAI.APIConnectionTimeoutError())).toBe('timeout');
    expect(classifyError(new OpenAI.APIConnectionError({ message: 'refused' }))).toBe('connection');
    expect(classifyError(new TypeError('terminated'))).toBe('stream');
    expect(classifyError(new Error('weird'))).toBe('other');
  });
});

test('prompts have the requested number of words and differ between requests', () => {
  const random = mulberry32(1);
  const a = makePrompt(50, random);
  expect(a.split(' ')).toHaveLength(50);
  expect(makePrompt(50, random)).not.toBe(a);
});

test('natural prompts are readable questions about varied subjects, reproducible by seed', () => {
  const random = mulberry32(1);
  const questions = Array.from({ length: 50 }, () => makeQuestion(random));
  for (const question of questions) {
    // A sentence: capital first letter, words and spaces, ending with ? or .
    expect(question).toMatch(/^[A-Z][\w ,'-]+[?.]$/);
    expect(question).not.toContain('{}');
  }
  expect(new Set(questions).size).toBeGreaterThan(30);
  const again = mulberry32(1);
  expect(Array.from({ length: 50 }, () => makeQuestion(again))).toEqual(questions);
});

describe('requests per worker', () => {
  const answered = (workerId: string | undefined, ok = true): RequestSample => ({
    ...(ok
      ? { ok: true, latencyMs: 10, promptTokens: 16, completionTokens: 8 }
      : { ok: false, latencyMs: 5, promptTokens: 0, completionTokens: 0, errorClass: 'http_502' }),
    ...(workerId === undefined ? {} : { workerId }),
  });

  test('are counted from the worker each answer named, failures included', () => {
    const report = summarizeLoadTest(
      [
        answered('w10'),
        answered('w2'),
        answered('w2'),
        answered('w2', false),
        answered(undefined, false),
      ],
      1000,
      config,
    );
    expect(report.workers).toEqual({
      w10: { requests: 1, failed: 0 },
      w2: { requests: 3, failed: 1 },
    });
    const text = formatLoadTestReport(report);
    // One line per worker in natural order, as the seed listed its workers after a test.
    expect(text).toContain(
      'workers      2 answered, 1 to 3 requests each\n' +
        '               w2   3 (1 failed)\n' +
        '               w10  1',
    );
  });

  test('a server that does not name its workers is said to be one', () => {
    const text = formatLoadTestReport(summarizeLoadTest([answered(undefined)], 1000, config));
    expect(text).toContain(
      'workers      n/a (no answer named its worker in x-elastic-selected-worker-id',
    );
  });

  test('temperature and natural prompts show in the run description', () => {
    const text = formatLoadTestReport(
      summarizeLoadTest([], 1000, { ...config, promptStyle: 'natural', temperature: 0.7 }),
    );
    expect(text).toContain(
      'load test: 5 requests, concurrency 4, chat, streaming, natural-language questions, ' +
        'max_tokens 8, temperature 0.7',
    );
  });
});
