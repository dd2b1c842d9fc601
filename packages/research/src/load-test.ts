/**
 * A load tester for OpenAI-compatible endpoints (the scheduler's `/v1`): closed-loop
 * concurrency, a request count or a duration, streaming or not, chat or completions.
 * Before the test it shows the cluster and waits for a ready worker; after it, how the
 * requests spread over the workers. Measuring is separate from summarising:
 * {@link summarizeLoadTest} and {@link formatLoadTestReport} are pure.
 */
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { formatClusterBanner, readCluster } from './cluster-status.js';
import { mulberry32 } from './dataset.js';
import { ResearchError } from './errors.js';
import { firstModel } from './models.js';
import { createProgress } from './progress.js';
import { childSignal, messageOf } from './util.js';
import { waitForReadyWorkers } from './wait.js';

/**
 * The response header naming the worker the scheduler's proxy chose for a request (the
 * one that started the answer, when a stream was continued elsewhere).
 */
export const WORKER_HEADER = 'x-elastic-selected-worker-id';

/** How prompts are made: random common words of a set length, or readable questions. */
export type PromptStyle = 'synthetic' | 'natural';

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
  /**
   * `synthetic` (default): `promptTokens` random common words, the same length every time;
   * `natural`: a readable question per request (as the seed's load test sent), of varying length.
   */
  promptStyle?: PromptStyle;
  /** Approximate prompt length in tokens for `synthetic` prompts, default 128. */
  promptTokens?: number;
  /** `max_tokens` of each request, default 128. */
  maxTokens?: number;
  /** Sampling `temperature` sent with each request; the engine's default when unset. */
  temperature?: number;
  /** Ask vLLM/SGLang to ignore EOS so every response has `maxTokens` tokens (default true). */
  ignoreEos?: boolean;
  /** Per-request timeout, default 600000 ms. */
  timeoutMs?: number;
  /** Client retries per request, default 0 (so errors are counted, not hidden). */
  maxRetries?: number;
  /** Seeds the random prompts. */
  seed?: number;
  /**
   * Longest wait for a ready worker before the test, default 600000 ms (0: check once).
   * A server without `/cluster_status` (not a scheduler) is not waited for.
   */
  waitTimeoutMs?: number;
  /** Time between two looks at `/cluster_status` while waiting, default 5000 ms. */
  waitIntervalMs?: number;
  /** Receives the cluster banner and the waiting lines; nothing when unset. */
  log?: NodeJS.WritableStream;
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
  const api = options.api ?? 'chat';
  const stream = options.stream ?? true;
  const concurrency = options.concurrency ?? 8;
  const promptStyle = options.promptStyle ?? 'synthetic';
  const promptTokens = options.promptTokens ?? 128;
  const maxTokens = options.maxTokens ?? 128;
  const requests = options.durationMs === undefined ? (options.requests ?? 100) : options.requests;
  const random = mulberry32(options.seed ?? 1);
  const ignoreEos = options.ignoreEos ?? true;
  const config: Omit<LoadTestReport['config'], 'model'> = {
    baseURL: options.baseURL,
    api,
    stream,
    concurrency,
    promptStyle,
    promptTokens,
    maxTokens,
  };
  if (requests !== undefined) config.requests = requests;
  if (options.durationMs !== undefined) config.durationMs = options.durationMs;
  if (options.temperature !== undefined) config.temperature = options.temperature;

  const model = await prepareCluster(client, options, describeRun(config));

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
      const prompt =
        promptStyle === 'natural' ? makeQuestion(random) : makePrompt(promptTokens, random);
      const sample = await measure(
        client,
        { model, api, stream, prompt, maxTokens, ignoreEos, temperature: options.temperature },
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
  return summarizeLoadTest(samples, elapsedMs, { ...config, model });
}

/**
 * Before the test: reads the cluster, logs the banner, waits (bounded) for a ready worker
 * and returns the model to test (`--model`, else the first of `/v1/models`).
 */
async function prepareCluster(
  client: OpenAI,
  options: LoadTestOptions,
  run: string,
): Promise<string> {
  const schedulerUrl = options.baseURL.replace(/\/v1\/?$/, '');
  const log = options.log ?? new Writable({ write: (_chunk, _encoding, done) => done() });
  const cluster = await readCluster(schedulerUrl, client, options.signal);
  log.write(`${formatClusterBanner(cluster, { schedulerUrl, model: options.model, run })}\n`);
  await waitForReadyWorkers({
    schedulerUrl,
    log,
    timeoutMs: options.waitTimeoutMs,
    intervalMs: options.waitIntervalMs,
    apiKey: options.apiKey,
    signal: options.signal,
  }).catch((error: unknown) => {
    // Ctrl-C while waiting: one line saying so rather than an AbortError's stack.
    if (!options.signal?.aborted) throw error;
    throw new ResearchError('WORKERS_NOT_READY', 'interrupted while waiting for a ready worker');
  });
  return options.model ?? cluster.models[0]?.id ?? (await firstModel(client)).id;
}

interface RequestPlan {
  model: string;
  api: 'chat' | 'completions';
  stream: boolean;
  prompt: string;
  maxTokens: number;
  ignoreEos: boolean;
  temperature: number | undefined;
}

// vLLM/SGLang extension: generate exactly max_tokens tokens so lengths are comparable.
type EngineExtras = { ignore_eos?: boolean; temperature?: number };

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
  if (plan.temperature !== undefined) extras.temperature = plan.temperature;
  let workerId: string | undefined;
  const noteWorker = (headers: Headers | undefined) => {
    workerId = headers?.get(WORKER_HEADER) ?? undefined;
  };
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
      const { data: stream, response } =
        plan.api === 'chat'
          ? await client.chat.completions
              .create({ ...chat, ...streamOptions }, requestOptions)
              .withResponse()
          : await client.completions
              .create({ ...completion, ...streamOptions }, requestOptions)
              .withResponse();
      noteWorker(response.headers);
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
      const { data, response } =
        plan.api === 'chat'
          ? await client.chat.completions
              .create({ ...chat, stream: false }, requestOptions)
              .withResponse()
          : await client.completions
              .create({ ...completion, stream: false }, requestOptions)
              .withResponse();
      noteWorker(response.headers);
      countUsage(data.usage);
    }
  } catch (error) {
    if (workerId === undefined && error instanceof OpenAI.APIError) noteWorker(error.headers);
    const failed: RequestSample = {
      ok: false,
      latencyMs: performance.now() - start,
      promptTokens,
      completionTokens,
      errorClass: classifyError(error),
      errorMessage: messageOf(error),
    };
    if (workerId !== undefined) failed.workerId = workerId;
    return failed;
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
  if (workerId !== undefined) sample.workerId = workerId;
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
function describeRun(c: Omit<LoadTestReport['config'], 'model'>): string {
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

const QUESTIONS = [
  'Tell me in a few sentences what everyone should know about {}.',
  'Explain {} in simple terms.',
  'Give two reasons why people care about {}.',
  'Write a short paragraph about {}.',
  'What are the main ideas behind {}?',
  'How would you explain {} to a ten-year-old?',
  'Summarize the history of {} briefly.',
  'Name three common misconceptions about {} and correct them.',
];

const SUBJECTS = [
  'photosynthesis',
  'the water cycle',
  'plate tectonics',
  'the theory of relativity',
  'machine learning',
  'how the internet routes packets',
  'black holes',
  'vaccines',
  'inflation',
  'the French Revolution',
  'the immune system',
  'solar power',
  'compilers',
  'public-key cryptography',
  'the Roman Empire',
  'climate change',
  'DNA replication',
  'supply and demand',
  'the printing press',
  'neural networks',
  'ocean tides',
  'volcanoes',
  'the Renaissance',
  'electric cars',
  'sleep',
  'coral reefs',
  'the stock market',
  'gravity',
  'antibiotics',
  'democracy',
  'jazz',
  'the Moon landing',
  'rainbows',
  'earthquakes',
  'honey bees',
  'the periodic table',
  'quantum computing',
  'recycling',
  'hash tables',
  'the human heart',
];

/**
 * A readable question, e.g. `Explain black holes in simple terms.`: one of a few question
 * forms about one of forty everyday subjects, drawn with `random`. Pure given `random`.
 */
export function makeQuestion(random: () => number): string {
  const form = QUESTIONS[Math.floor(random() * QUESTIONS.length)] as string;
  return form.replace('{}', SUBJECTS[Math.floor(random() * SUBJECTS.length)] as string);
}
