/**
 * A load tester for OpenAI-compatible endpoints (the scheduler's `/v1`): closed-loop
 * concurrency, a request count or a duration, streaming or not, chat or completions.
 * Measuring is separate from summarising: {@link summarizeLoadTest} and
 * {@link formatLoadTestReport} are pure.
 */
import OpenAI from 'openai';
import { mulberry32 } from './dataset.js';
import { firstModelId } from './models.js';
import { createProgress } from './progress.js';
import { childSignal, messageOf } from './util.js';

/** Options of {@link runLoadTest}. */
export interface LoadTestOptions {
  /** Base URL including `/v1`, e.g. `http://localhost:8780/v1`. */
  baseURL: string;
  apiKey?: string;
  /** Default: the first model of `/v1/models`. */
  model?: string;
  /** `chat` (`/v1/chat/completions`, default) or `completions` (`/v1/completions`). */
  api?: 'chat' | 'completions';
  /** Stream responses (default true); time to first token is measured only when streaming. */
  stream?: boolean;
  /** Requests in flight at once, default 8. */
  concurrency?: number;
  /** Total requests; default 100 unless `durationMs` is set. */
  requests?: number;
  /** Keep sending for this long instead of a fixed count; in-flight requests finish. */
  durationMs?: number;
  /** Approximate prompt length in tokens (random common words), default 128. */
  promptTokens?: number;
  /** `max_tokens` of each request, default 128. */
  maxTokens?: number;
  /** Ask vLLM/SGLang to ignore EOS so every response has `maxTokens` tokens (default true). */
  ignoreEos?: boolean;
  /** Per-request timeout, default 600000 ms. */
  timeoutMs?: number;
  /** Client retries per request, default 0 (so errors are counted, not hidden). */
  maxRetries?: number;
  /** Seeds the random prompts. */
  seed?: number;
  /** Progress for count-based runs; nothing when unset. */
  progress?: NodeJS.WritableStream & { isTTY?: boolean };
  signal?: AbortSignal;
}

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
    promptTokens: number;
    maxTokens: number;
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
}

/**
 * Runs a load test and returns its report.
 *
 * @example
 * ```ts
 * const report = await runLoadTest({ baseURL: 'http://localhost:8780/v1', concurrency: 64, requests: 2000 });
 * console.log(formatLoadTestReport(report));
 * ```
 */
export async function runLoadTest(options: LoadTestOptions): Promise<LoadTestReport> {
  const client = new OpenAI({
    baseURL: options.baseURL,
    apiKey: options.apiKey ?? 'EMPTY',
    maxRetries: options.maxRetries ?? 0,
    timeout: options.timeoutMs ?? 600_000,
  });
  const model = options.model ?? (await firstModelId(client));
  const api = options.api ?? 'chat';
  const stream = options.stream ?? true;
  const concurrency = options.concurrency ?? 8;
  const promptTokens = options.promptTokens ?? 128;
  const maxTokens = options.maxTokens ?? 128;
  const requests = options.durationMs === undefined ? (options.requests ?? 100) : options.requests;
  const random = mulberry32(options.seed ?? 1);
  const ignoreEos = options.ignoreEos ?? true;

  // One child of the caller's signal for the whole run, so that lanes do not pile
  // listeners onto the caller's signal.
  const scope = childSignal(options.signal);
  const samples: RequestSample[] = [];
  const progress =
    options.progress && requests !== undefined
      ? createProgress(options.progress, requests)
      : undefined;
  const started = performance.now();
  const deadline = options.durationMs === undefined ? Infinity : started + options.durationMs;
  let issued = 0;
  const lane = async () => {
    while (
      !scope.signal?.aborted &&
      (requests === undefined || issued < requests) &&
      performance.now() < deadline
    ) {
      issued += 1;
      const prompt = makePrompt(promptTokens, random);
      const sample = await measure(
        client,
        { model, api, stream, prompt, maxTokens, ignoreEos },
        scope.signal,
      );
      // Requests cut off by an interrupt say nothing about the server: leave them out.
      if (!sample.ok && scope.signal?.aborted) break;
      samples.push(sample);
      progress?.tick(!sample.ok, sample.ok ? 'ok' : (sample.errorClass ?? 'failed'));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane)).finally(scope.dispose);
  progress?.stop();
  const elapsedMs = performance.now() - started;

  const config: LoadTestReport['config'] = {
    baseURL: options.baseURL,
    model,
    api,
    stream,
    concurrency,
    promptTokens,
    maxTokens,
  };
  if (requests !== undefined) config.requests = requests;
  if (options.durationMs !== undefined) config.durationMs = options.durationMs;
  return summarizeLoadTest(samples, elapsedMs, config);
}

interface RequestPlan {
  model: string;
  api: 'chat' | 'completions';
  stream: boolean;
  prompt: string;
  maxTokens: number;
  ignoreEos: boolean;
}

// vLLM/SGLang extension: generate exactly max_tokens tokens so lengths are comparable.
type EngineExtras = { ignore_eos?: boolean };

type Usage = { prompt_tokens: number; completion_tokens: number } | null | undefined;

async function measure(
  client: OpenAI,
  plan: RequestPlan,
  signal?: AbortSignal,
): Promise<RequestSample> {
  const start = performance.now();
  let ttftMs: number | undefined;
  let promptTokens = 0;
  let completionTokens = 0;
  let chunks = 0;
  const countUsage = (usage: Usage) => {
    if (!usage) return;
    promptTokens = usage.prompt_tokens;
    completionTokens = usage.completion_tokens;
  };
  const extras: EngineExtras = plan.ignoreEos ? { ignore_eos: true } : {};
  const request = childSignal(signal);
  const requestOptions = request.signal ? { signal: request.signal } : undefined;
  const chat = {
    model: plan.model,
    messages: [{ role: 'user' as const, content: plan.prompt }],
    max_tokens: plan.maxTokens,
    ...extras,
  };
  const completion = {
    model: plan.model,
    prompt: plan.prompt,
    max_tokens: plan.maxTokens,
    ...extras,
  };
  const streamOptions = { stream: true as const, stream_options: { include_usage: true } };
  try {
    if (plan.stream) {
      const stream =
        plan.api === 'chat'
          ? await client.chat.completions.create({ ...chat, ...streamOptions }, requestOptions)
          : await client.completions.create({ ...completion, ...streamOptions }, requestOptions);
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        const text =
          choice === undefined ? '' : 'delta' in choice ? choice.delta.content : choice.text;
        if (text) {
          chunks += 1;
          ttftMs ??= performance.now() - start;
        }
        countUsage(chunk.usage);
      }
    } else {
      const response =
        plan.api === 'chat'
          ? await client.chat.completions.create({ ...chat, stream: false }, requestOptions)
          : await client.completions.create({ ...completion, stream: false }, requestOptions);
      countUsage(response.usage);
    }
  } catch (error) {
    return {
      ok: false,
      latencyMs: performance.now() - start,
      promptTokens,
      completionTokens,
      errorClass: classifyError(error),
      errorMessage: messageOf(error),
    };
  } finally {
    request.dispose();
  }
  // Servers that do not send usage while streaming: count content chunks instead.
  if (plan.stream && completionTokens === 0) completionTokens = chunks;
  const sample: RequestSample = {
    ok: true,
    latencyMs: performance.now() - start,
    promptTokens,
    completionTokens,
  };
  if (ttftMs !== undefined) sample.ttftMs = ttftMs;
  return sample;
}

/**
 * Names the class of a failed request: `http_<status>` when the server answered,
 * `timeout`, `connection`, `stream` (the stream broke after it began) or `other`.
 */
export function classifyError(error: unknown): string {
  if (error instanceof OpenAI.APIConnectionTimeoutError) return 'timeout';
  if (error instanceof OpenAI.APIConnectionError) return 'connection';
  if (error instanceof OpenAI.APIError) {
    return error.status === undefined ? 'stream' : `http_${error.status}`;
  }
  if (error instanceof Error && /terminated|socket|ECONNRESET|aborted/i.test(error.message)) {
    return 'stream';
  }
  return 'other';
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
  for (const sample of samples) {
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
  };
}

/** Formats a report as an aligned text table. Pure. */
export function formatLoadTestReport(report: LoadTestReport): string {
  const c = report.config;
  const what = c.durationMs === undefined ? `${c.requests} requests` : `${c.durationMs / 1000} s`;
  const dist = (d: Distribution | null) =>
    d === null
      ? 'n/a'
      : `p50 ${d.p50}  p90 ${d.p90}  p99 ${d.p99}  mean ${d.mean}  min ${d.min}  max ${d.max}`;
  const errorLines = Object.entries(report.errors)
    .sort((a, b) => b[1].count - a[1].count)
    .map(([name, e]) => `${name} x${e.count} (${e.example.slice(0, 120)})`);
  return [
    `load test: ${what}, concurrency ${c.concurrency}, ${c.api}, ${c.stream ? 'streaming' : 'not streaming'}, ` +
      `prompt ~${c.promptTokens} tokens, max_tokens ${c.maxTokens}`,
    `model ${c.model} at ${c.baseURL}`,
    `requests     ${report.requests.ok} ok, ${report.requests.failed} failed in ${(report.elapsedMs / 1000).toFixed(2)} s: ${report.throughput.requestsPerSecond} req/s`,
    `tokens       ${report.tokens.completion} completion (${report.throughput.outputTokensPerSecond} tok/s), ` +
      `${report.tokens.prompt} prompt (${report.throughput.totalTokensPerSecond} total tok/s)`,
    `latency ms   ${dist(report.latencyMs)}`,
    `ttft ms      ${c.stream ? dist(report.ttftMs) : 'n/a (not streaming)'}`,
    `errors       ${errorLines.length === 0 ? 'none' : errorLines.join('\n             ')}`,
  ].join('\n');
}

const WORDS =
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will more can who its time out up two may into only other new some could these then first any my now such like our over man me even most made after also did many well must through back years where much your way down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(
    ' ',
  );

/** A prompt of about `tokens` tokens: random common English words (one token each, roughly). */
export function makePrompt(tokens: number, random: () => number): string {
  const words: string[] = [];
  for (let i = 0; i < tokens; i += 1) {
    words.push(WORDS[Math.floor(random() * WORDS.length)] as string);
  }
  return words.join(' ');
}
