/**
 * The bodies of vLLM's OpenAI server, field by field, as pure functions of the request and
 * the planned generation: a full answer, its usage and logprobs, the chunks of a stream
 * (SSE events), and the model list. Writing them to a socket is not done here.
 */
import type { ChatDelta, ParsedChat } from './chat-output.js';
import { codePoints } from './generation.js';
import type { Generation, TokenLogprob } from './generation.js';
import type { ResolvedOptions } from './options.js';
import type { GenerationRequest } from './requests.js';
import { decode } from './tokenizer.js';

const utf8 = new TextEncoder();

/** An answer's `created`: the time in whole seconds since the epoch. */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** The `usage` of an answer. */
export function usageOf(plan: Generation) {
  return {
    prompt_tokens: plan.promptTokens,
    total_tokens: plan.promptTokens + plan.completionTokens,
    completion_tokens: plan.completionTokens,
  };
}

/** A chat answer the endpoint parses (an output format): its chunks, and its tool call's id. */
export interface ParsedAnswer extends ParsedChat {
  /** `chatcmpl-tool-<32 hex>`, as vLLM names a call. */
  callId: string;
}

/** A parsed chunk's `delta`: only the fields with something in them (`{}` for a marker). */
function wireDelta(delta: ChatDelta, callId: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (delta.reasoning !== undefined) out.reasoning = delta.reasoning;
  if (delta.content !== undefined) out.content = delta.content;
  const call = delta.toolCall;
  if (call !== undefined) {
    const fn = { arguments: call.arguments };
    out.tool_calls = [
      call.name === undefined
        ? { index: 0, function: fn }
        : { index: 0, id: callId, type: 'function', function: { name: call.name, ...fn } },
    ];
  }
  return out;
}

/** The `delta` of a parsed answer's chunk `i`; `{}` when `dropped`, or for a marker. */
export function parsedWireDelta(
  parsed: ParsedAnswer,
  i: number,
  dropped = false,
): Record<string, unknown> {
  const delta = parsed.deltas[i];
  return dropped || delta === undefined ? {} : wireDelta(delta, parsed.callId);
}

/**
 * The non-streaming `message`: the text as `content`, or a parsed answer's parts (`content`
 * null when empty and a tool was called; vLLM main's `reasoning`, no `reasoning_content`).
 */
function chatMessage(plan: Generation, parsed: ParsedAnswer | undefined) {
  const unused = { refusal: null, annotations: null, audio: null, function_call: null };
  if (parsed === undefined) {
    const rest = { tool_calls: [], reasoning_content: null };
    return { role: 'assistant', content: plan.text, ...unused, ...rest };
  }
  const { output, callId } = parsed;
  const called = output.toolCalls.length > 0;
  return {
    role: 'assistant',
    content: output.content === '' && called ? null : output.content,
    ...unused,
    tool_calls: output.toolCalls.map((call) => ({
      id: callId,
      type: 'function',
      function: { name: call.name, arguments: call.arguments },
    })),
    reasoning: output.reasoning === '' ? null : output.reasoning,
  };
}

/** The answer of a request that does not stream, as vLLM serializes it. */
export function fullResponse(
  request: GenerationRequest,
  plan: Generation,
  id: string,
  created: number,
  parsed?: ParsedAnswer,
) {
  const tokenIds = request.returnTokenIds ? plan.ids : null;
  const promptIds = request.returnTokenIds ? plan.promptIds : null;
  const logprobs = logprobsOf(request, plan, 0, plan.ids.length, 0);
  const usage = { ...usageOf(plan), prompt_tokens_details: null };
  const end = {
    finish_reason: parsed?.output.finishReason ?? plan.finishReason,
    stop_reason: plan.stopReason,
  };
  if (request.kind === 'chat') {
    return {
      id,
      object: 'chat.completion',
      created,
      model: request.model,
      choices: [
        {
          index: 0,
          message: chatMessage(plan, parsed),
          logprobs,
          ...end,
          token_ids: tokenIds,
        },
      ],
      service_tier: null,
      system_fingerprint: null,
      usage,
      prompt_logprobs: null,
      prompt_token_ids: promptIds,
      kv_transfer_params: null,
    };
  }
  return {
    id,
    object: 'text_completion',
    created,
    model: request.model,
    choices: [
      {
        index: 0,
        text: plan.text,
        logprobs,
        ...end,
        token_ids: tokenIds,
        prompt_logprobs: null,
        prompt_token_ids: promptIds,
      },
    ],
    service_tier: null,
    system_fingerprint: null,
    usage,
    kv_transfer_params: null,
  };
}

/**
 * The `logprobs` of ids `from .. to` of the plan (a chunk's, or all of them), in the
 * route's shape; `textOffset` is the completion's first `text_offset` (vLLM: the length
 * of the text streamed before the chunk).
 */
export function logprobsOf(
  request: GenerationRequest,
  plan: Generation,
  from: number,
  to: number,
  textOffset: number,
) {
  const k = request.topLogprobs;
  const top = plan.logprobs;
  if (k === undefined || top === undefined) return null;
  const entries = top.slice(from, to);
  if (request.kind === 'chat') {
    const candidate = (c: TokenLogprob) => {
      const token = decode([c.id]);
      return { token, logprob: c.logprob, bytes: [...utf8.encode(token)] };
    };
    return {
      content: entries.map((candidates) => ({
        ...candidate(candidates[0]!),
        top_logprobs: candidates.slice(0, k).map(candidate),
      })),
    };
  }
  // vLLM's completions logprobs: each text_offset adds the previous token's decoded length.
  const tokens = entries.map((candidates) => decode([candidates[0]!.id]));
  const offsets: number[] = [];
  let offset = textOffset;
  for (const token of tokens) {
    offsets.push(offset);
    offset += codePoints(token);
  }
  return {
    text_offset: offsets,
    token_logprobs: entries.map((candidates) => candidates[0]!.logprob),
    tokens,
    top_logprobs: entries.map((candidates) =>
      Object.fromEntries(candidates.map((c) => [decode([c.id]), c.logprob])),
    ),
  };
}

/** One SSE event of a stream, shaped as vLLM serializes it (chat: exclude_unset; completions: not). */
export function sseEvent(
  request: GenerationRequest,
  id: string,
  stamp: number,
  body: object,
): string {
  const head = { id, object: chunkObject(request.kind), created: stamp, model: request.model };
  return `data: ${JSON.stringify({ ...head, ...body })}\n\n`;
}

/**
 * The stream's chunk of plan chunk `i` (ids `from .. from + n`), the final one if `last`;
 * `dropped` (the `dropChunk` fault): sent without its text.
 */
export function tokenChunk(
  request: GenerationRequest,
  plan: Generation,
  i: number,
  from: number,
  textOffset: number,
  dropped: boolean,
  last: boolean,
  parsed?: ParsedAnswer,
): object {
  const ids = plan.chunkIds[i] ?? [];
  const text = dropped ? '' : (plan.deltas[i] ?? '');
  const logprobs = logprobsOf(request, plan, from, from + ids.length, textOffset);
  const tokenIds = request.returnTokenIds ? ids : null;
  const end = last
    ? {
        finish_reason: parsed?.output.finishReason ?? plan.finishReason,
        stop_reason: plan.stopReason,
      }
    : { finish_reason: null };
  if (request.kind === 'chat') {
    const delta = parsed ? parsedWireDelta(parsed, i, dropped) : { content: text };
    return { choices: [{ index: 0, delta, logprobs, ...end, token_ids: tokenIds }] };
  }
  return {
    choices: [
      {
        index: 0,
        text,
        logprobs,
        finish_reason: end.finish_reason,
        stop_reason: last ? plan.stopReason : null,
        prompt_token_ids: request.returnTokenIds && i === 0 ? plan.promptIds : null,
        token_ids: tokenIds,
      },
    ],
    usage: null,
  };
}

/** The first chunk of a chat stream: the assistant's role, and the prompt ids when asked. */
export function roleChunk(request: GenerationRequest, plan: Generation): object {
  const role = { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null };
  return {
    choices: [{ ...role, finish_reason: null }],
    prompt_token_ids: request.returnTokenIds ? plan.promptIds : null,
  };
}

/** The body of `/v1/models`: every served name, as vLLM lists it. */
export function modelList(opts: ResolvedOptions, stamp: number) {
  return {
    object: 'list',
    data: opts.servedModelNames.map((id) => ({
      id,
      object: 'model',
      created: stamp,
      owned_by: 'vllm',
      root: opts.model,
      parent: null,
      max_model_len: opts.maxModelLen,
      permission: [],
    })),
  };
}

function chunkObject(kind: 'chat' | 'completion'): string {
  return kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
}
