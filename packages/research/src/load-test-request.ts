/**
 * One load-test request through the openai client, streamed or not, chat or completions:
 * its latency, time to first token, token counts and answering worker, or the class of its
 * failure.
 */
import OpenAI from 'openai';
import { WORKER_HEADER } from './load-test-report.js';
import type { RequestSample } from './load-test-report.js';
import { childSignal, messageOf } from './util.js';

/** What one request sends. */
export interface RequestPlan {
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

/** Sends one request and measures it; a failure is a sample too, never a throw. */
export async function measure(
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
