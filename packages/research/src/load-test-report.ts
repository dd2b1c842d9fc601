/**
 * What a load test measured and how it reads: the per-request sample, the report (also the
 * `--json` output), and the pure functions that summarise samples and format the report.
 */
import type { PromptStyle } from './load-test-prompts.js';

/**
 * The response header naming the worker the scheduler's proxy chose for a request (the
 * one that started the answer, when a stream was continued elsewhere).
 */
export const WORKER_HEADER = 'x-elastic-selected-worker-id';

/** The measurement of one request. */
export interface RequestSample {
  ok: boolean;
  /** From sending to the last byte. */
  latencyMs: number;
  /** From sending to the first token (streaming only). */
  ttftMs?: number;
  promptTokens: number;
  completionTokens: number;
  /** For failures: `http_<status>`, `timeout`, `connection`, `stream` or `other`. */
  errorClass?: string;
  errorMessage?: string;
  /** The worker that answered ({@link WORKER_HEADER}); unset when the answer did not say. */
  workerId?: string;
}

/** Requests one worker answered (a failure counts when its answer named the worker). */
export interface WorkerCount {
  requests: number;
  failed: number;
}

/** Percentiles and extremes of one metric, in milliseconds. */
export interface Distribution {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** What a load test measured. Also the `--json` output. */
export interface LoadTestReport {
  config: {
    baseURL: string;
    model: string;
    api: 'chat' | 'completions';
    stream: boolean;
    concurrency: number;
    requests?: number;
    durationMs?: number;
    promptStyle: PromptStyle;
    /** For `synthetic` prompts (natural questions vary in length). */
    promptTokens: number;
    maxTokens: number;
    temperature?: number;
  };
  requests: { total: number; ok: number; failed: number };
  elapsedMs: number;
  throughput: {
    requestsPerSecond: number;
    outputTokensPerSecond: number;
    totalTokensPerSecond: number;
  };
  tokens: { prompt: number; completion: number };
  /** Successful requests only; null when none succeeded. */
  latencyMs: Distribution | null;
  /** Successful streamed requests only; null when not streaming. */
  ttftMs: Distribution | null;
  /** Failures by class, each with a count and one example message. */
  errors: Record<string, { count: number; example: string }>;
  /**
   * Requests per worker id, from the {@link WORKER_HEADER} of each answer: how the load
   * spread. Empty when no answer named a worker (a server other than the scheduler).
   */
  workers: Record<string, WorkerCount>;
}

/** Nearest-rank percentile of unsorted values (0 when empty). Pure. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

function distribution(values: readonly number[]): Distribution | null {
  if (values.length === 0) return null;
  const round = (n: number) => Math.round(n * 10) / 10;
  return {
    p50: round(percentile(values, 50)),
    p90: round(percentile(values, 90)),
    p99: round(percentile(values, 99)),
    mean: round(values.reduce((a, b) => a + b, 0) / values.length),
    min: round(Math.min(...values)),
    max: round(Math.max(...values)),
  };
}

/** Turns request samples into a report. Pure. */
export function summarizeLoadTest(
  samples: readonly RequestSample[],
  elapsedMs: number,
  config: LoadTestReport['config'],
): LoadTestReport {
  const ok = samples.filter((s) => s.ok);
  const seconds = elapsedMs / 1000;
  const prompt = ok.reduce((n, s) => n + s.promptTokens, 0);
  const completion = ok.reduce((n, s) => n + s.completionTokens, 0);
  const errors: LoadTestReport['errors'] = {};
  const workers: LoadTestReport['workers'] = {};
  for (const sample of samples) {
    if (sample.workerId !== undefined) {
      const count = (workers[sample.workerId] ??= { requests: 0, failed: 0 });
      count.requests += 1;
      if (!sample.ok) count.failed += 1;
    }
    if (sample.ok) continue;
    const key = sample.errorClass ?? 'other';
    const entry = (errors[key] ??= { count: 0, example: sample.errorMessage ?? '' });
    entry.count += 1;
  }
  const rate = (n: number) => (seconds > 0 ? Math.round((n / seconds) * 100) / 100 : 0);
  return {
    config,
    requests: { total: samples.length, ok: ok.length, failed: samples.length - ok.length },
    elapsedMs: Math.round(elapsedMs),
    throughput: {
      requestsPerSecond: rate(ok.length),
      outputTokensPerSecond: rate(completion),
      totalTokensPerSecond: rate(prompt + completion),
    },
    tokens: { prompt, completion },
    latencyMs: distribution(ok.map((s) => s.latencyMs)),
    ttftMs: config.stream
      ? distribution(ok.flatMap((s) => (s.ttftMs === undefined ? [] : [s.ttftMs])))
      : null,
    errors,
    workers,
  };
}

/** `100 requests, concurrency 8, chat, streaming, prompt ~128 tokens, max_tokens 128`. Pure. */
export function describeRun(c: Omit<LoadTestReport['config'], 'model'>): string {
  const what = c.durationMs === undefined ? `${c.requests} requests` : `${c.durationMs / 1000} s`;
  const prompts =
    c.promptStyle === 'natural' ? 'natural-language questions' : `prompt ~${c.promptTokens} tokens`;
  return (
    `${what}, concurrency ${c.concurrency}, ${c.api}, ${c.stream ? 'streaming' : 'not streaming'}, ` +
    `${prompts}, max_tokens ${c.maxTokens}` +
    (c.temperature === undefined ? '' : `, temperature ${c.temperature}`)
  );
}

/** Worker ids in natural order (`w2` before `w10`). */
const byWorkerId = new Intl.Collator('en', { numeric: true }).compare;

function workerLines(workers: LoadTestReport['workers']): string[] {
  const ids = Object.keys(workers).sort(byWorkerId);
  if (ids.length === 0) {
    return [`n/a (no answer named its worker in ${WORKER_HEADER}: not the scheduler?)`];
  }
  const counts = ids.map((id) => (workers[id] as WorkerCount).requests);
  const width = Math.max(...ids.map((id) => id.length));
  const countWidth = String(Math.max(...counts)).length;
  return [
    `${ids.length} answered, ${Math.min(...counts)} to ${Math.max(...counts)} requests each`,
    ...ids.map((id) => {
      const w = workers[id] as WorkerCount;
      const failed = w.failed > 0 ? ` (${w.failed} failed)` : '';
      return `  ${id.padEnd(width)}  ${String(w.requests).padStart(countWidth)}${failed}`;
    }),
  ];
}

/** Formats a report as an aligned text table. Pure. */
export function formatLoadTestReport(report: LoadTestReport): string {
  const c = report.config;
  const dist = (d: Distribution | null) =>
    d === null
      ? 'n/a'
      : `p50 ${d.p50}  p90 ${d.p90}  p99 ${d.p99}  mean ${d.mean}  min ${d.min}  max ${d.max}`;
  const errorLines = Object.entries(report.errors)
    .sort((a, b) => b[1].count - a[1].count)
    .map(([name, e]) => `${name} x${e.count} (${e.example.slice(0, 120)})`);
  return [
    `load test: ${describeRun(c)}`,
    `model ${c.model} at ${c.baseURL}`,
    `requests     ${report.requests.ok} ok, ${report.requests.failed} failed in ${(report.elapsedMs / 1000).toFixed(2)} s: ${report.throughput.requestsPerSecond} req/s`,
    `tokens       ${report.tokens.completion} completion (${report.throughput.outputTokensPerSecond} tok/s), ` +
      `${report.tokens.prompt} prompt (${report.throughput.totalTokensPerSecond} total tok/s)`,
    `latency ms   ${dist(report.latencyMs)}`,
    `ttft ms      ${c.stream ? dist(report.ttftMs) : 'n/a (not streaming)'}`,
    `errors       ${errorLines.length === 0 ? 'none' : errorLines.join('\n             ')}`,
    `workers      ${workerLines(report.workers).join('\n             ')}`,
  ].join('\n');
}
