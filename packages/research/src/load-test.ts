/**
 * A load tester for OpenAI-compatible endpoints (the scheduler's `/v1`): closed-loop
 * concurrency, a request count or a duration, streaming or not, chat or completions.
 * Before the test it shows the cluster and waits for a ready worker; after it, how the
 * requests spread over the workers. This file owns the run (options, the closed-loop
 * lanes, the wait before); one request is measured in `load-test-request.ts`, and the
 * report is summarised and formatted, purely, in `load-test-report.ts`.
 */
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { formatClusterBanner, readCluster } from './cluster-status.js';
import { mulberry32 } from './dataset.js';
import { ResearchError } from './errors.js';
import { makePrompt, makeQuestion } from './load-test-prompts.js';
import type { PromptStyle } from './load-test-prompts.js';
import { describeRun, summarizeLoadTest } from './load-test-report.js';
import type { LoadTestReport, RequestSample } from './load-test-report.js';
import { measure } from './load-test-request.js';
import { firstModel } from './models.js';
import { createProgress } from './progress.js';
import { childSignal } from './util.js';
import { waitForReadyWorkers } from './wait.js';

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
    throw new ResearchError('workers_not_ready', 'interrupted while waiting for a ready worker');
  });
  return options.model ?? cluster.models[0]?.id ?? (await firstModel(client)).id;
}
