import type { ChatMessage, ToolFunction } from './chat-template.js';
import type { GenerationInput } from './generation.js';
import type { ResolvedOptions } from './options.js';
import { isTokenId } from './tokenizer.js';

/** An error answered to the client as an OpenAI-shaped body (vLLM's shape). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }

  /** `{"error": {"message", "type", "param", "code"}}` as vLLM sends it. */
  body(): string {
    return JSON.stringify({
      error: { message: this.message, type: this.type, param: this.param, code: this.status },
    });
  }
}

/** Shorthand for a 400 `BadRequestError`. */
export const badRequest = (message: string, param: string | null = null) =>
  new HttpError(400, message, 'BadRequestError', param);

/** A validated `/v1/completions` or `/v1/chat/completions` request. */
export interface GenerationRequest {
  kind: 'chat' | 'completion';
  model: string;
  /** The prompt as {@link expectedGeneration} takes it. */
  input: GenerationInput;
  maxTokens: number;
  /** `max_tokens` as the request gave it (null: the default applies). */
  requestedMaxTokens: number | null;
  stop: string[];
  stopTokenIds: number[];
  minTokens: number;
  includeStopStrInOutput: boolean;
  /** vLLM's `skip_special_tokens` (default true). */
  skipSpecialTokens: boolean;
  /** vLLM's `return_token_ids`: prompt and generated token ids in the answer. */
  returnTokenIds: boolean;
  /** Top logprobs per token (chat `top_logprobs` with `logprobs: true`; completions `logprobs`); undefined = none. */
  topLogprobs: number | undefined;
  stream: boolean;
  includeUsage: boolean;
}

/** vLLM's default `--max-logprobs`. */
export const MAX_LOGPROBS = 20;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Resolve the request's `model` against the served names (absent = the first one). */
export function checkModel(model: unknown, options: ResolvedOptions): string {
  if (model === undefined || model === null) return options.servedModelNames[0] ?? options.model;
  if (typeof model !== 'string') throw badRequest('model must be a string', 'model');
  if (!options.servedModelNames.includes(model)) {
    throw new HttpError(404, `The model \`${model}\` does not exist.`, 'NotFoundError', 'model');
  }
  return model;
}

function messageText(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content
      .map((part: unknown) =>
        isRecord(part) && part.type === 'text' && typeof part.text === 'string' ? part.text : '',
      )
      .join('');
  }
  throw badRequest(`messages[${i}].content must be a string or an array of parts`, 'messages');
}

function completionPrompt(prompt: unknown, options: ResolvedOptions): string | number[] {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length === 1 && typeof prompt[0] === 'string') return prompt[0];
    // A single prompt given as token ids.
    if (prompt.length > 0 && prompt.every((t) => Number.isSafeInteger(t))) {
      checkTokenIds(prompt as number[], options);
      return prompt as number[];
    }
  }
  throw badRequest(
    'prompt must be a string, an array with one string, or an array of token ids',
    'prompt',
  );
}

/** vLLM's 400 for a prompt id outside the vocabulary (the merged ids in it with `merges`). */
export function checkTokenIds(ids: readonly number[], options: ResolvedOptions): void {
  const bad = ids.find((id) => !isTokenId(id, options));
  if (bad === undefined) return;
  const shown = bad < 0 ? bad : Math.max(...ids);
  throw badRequest(`Token id ${shown} is out of vocabulary`);
}

function optionalCount(body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw badRequest(`${key} must be a non-negative integer`, key);
  }
  return v;
}

function optionalBoolean(body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`${key} must be a boolean`, key);
  return v;
}

function chatInput(body: Record<string, unknown>): GenerationInput {
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    throw badRequest('messages must be a non-empty array', 'messages');
  }
  const parsed: ChatMessage[] = messages.map((m: unknown, i) => {
    if (!isRecord(m) || typeof m.role !== 'string') {
      throw badRequest(`messages[${i}] must be an object with a string role`, 'messages');
    }
    return { role: m.role, content: messageText(m.content, i) };
  });
  const tools = offeredTools(body);
  const continueFinalMessage = optionalBoolean(body, 'continue_final_message') ?? false;
  const explicitPrompt = optionalBoolean(body, 'add_generation_prompt');
  const addGenerationPrompt = explicitPrompt ?? true;
  if (continueFinalMessage && addGenerationPrompt) {
    // vLLM's request validator refuses both given true; with add_generation_prompt left at its
    // default (true), the Hugging Face chat template refuses it: continuing a message needs
    // "add_generation_prompt": false, on vLLM as here.
    throw badRequest(
      explicitPrompt === true
        ? 'Cannot set both `continue_final_message` and `add_generation_prompt` to True.'
        : 'continue_final_message and add_generation_prompt are not compatible. Use ' +
            'continue_final_message when you want the model to continue the final message, and ' +
            'add_generation_prompt when you want to add a header that will prompt it to start a ' +
            'new assistant message instead.',
      'continue_final_message',
    );
  }
  return {
    kind: 'chat',
    messages: parsed,
    continueFinalMessage,
    addGenerationPrompt,
    ...(tools.length > 0 ? { tools } : {}),
  };
}

/**
 * The functions of the request's `tools` the chat template renders: none with
 * `tool_choice: "none"` (as vLLM's `--exclude-tools-when-tool-choice-none`), else all.
 */
function offeredTools(body: Record<string, unknown>): ToolFunction[] {
  const { tools } = body;
  if (tools === undefined || tools === null) return [];
  if (!Array.isArray(tools)) throw badRequest('tools must be an array', 'tools');
  const functions = tools.map((tool: unknown, i) => {
    const fn = isRecord(tool) ? tool.function : undefined;
    if (
      !isRecord(tool) ||
      tool.type !== 'function' ||
      !isRecord(fn) ||
      typeof fn.name !== 'string'
    ) {
      throw badRequest(
        `tools[${i}] must be {"type": "function", "function": {"name", ...}}`,
        'tools',
      );
    }
    return fn as ToolFunction;
  });
  return body.tool_choice === 'none' ? [] : functions;
}

function optionalPositiveInt(body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw badRequest(`${key} must be a positive integer`, key);
  }
  return v;
}

/** Validate a completion or chat body; throws {@link HttpError} the way vLLM would answer. */
export function parseGenerationRequest(
  kind: 'chat' | 'completion',
  body: unknown,
  options: ResolvedOptions,
): GenerationRequest {
  if (!isRecord(body)) throw badRequest('request body must be a JSON object');
  const model = checkModel(body.model, options);
  let input: GenerationInput;
  if (kind === 'chat') input = chatInput(body);
  else {
    if (body.prompt === undefined) throw badRequest('prompt is required', 'prompt');
    input = { kind: 'completion', prompt: completionPrompt(body.prompt, options) };
  }
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) {
    throw badRequest('the mock engine supports only n = 1', 'n');
  }
  const requested =
    optionalPositiveInt(body, 'max_completion_tokens') ?? optionalPositiveInt(body, 'max_tokens');
  const maxTokens = requested ?? options.maxTokensDefault;
  let stop: string[] = [];
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.every((s) => typeof s === 'string')) {
    stop = body.stop as string[];
  } else if (body.stop !== undefined && body.stop !== null) {
    throw badRequest('stop must be a string or an array of strings', 'stop');
  }
  const stopTokenIds = body.stop_token_ids ?? [];
  if (!Array.isArray(stopTokenIds) || !stopTokenIds.every((t) => Number.isInteger(t))) {
    throw badRequest('stop_token_ids must be an array of integers', 'stop_token_ids');
  }
  const minTokens = optionalCount(body, 'min_tokens') ?? 0;
  if (minTokens > maxTokens) {
    throw badRequest(
      `min_tokens must be less than or equal to max_tokens=${maxTokens}, got ${minTokens}.`,
      'min_tokens',
    );
  }
  const includeStopStrInOutput = optionalBoolean(body, 'include_stop_str_in_output') ?? false;
  const skipSpecialTokens = optionalBoolean(body, 'skip_special_tokens') ?? true;
  const returnTokenIds = optionalBoolean(body, 'return_token_ids') ?? false;
  let topLogprobs: number | undefined;
  if (kind === 'chat') {
    const top = optionalCount(body, 'top_logprobs') ?? 0;
    if (optionalBoolean(body, 'logprobs') === true) topLogprobs = top;
    else if (top > 0) {
      throw badRequest(
        'when using `top_logprobs`, `logprobs` must be set to true.',
        'top_logprobs',
      );
    }
  } else topLogprobs = optionalCount(body, 'logprobs');
  if (topLogprobs !== undefined && topLogprobs > MAX_LOGPROBS) {
    throw badRequest(
      `Requested sample logprobs of ${topLogprobs}, which is greater than max allowed: ${MAX_LOGPROBS}`,
      kind === 'chat' ? 'top_logprobs' : 'logprobs',
    );
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw badRequest('stream must be a boolean', 'stream');
  }
  const stream = body.stream === true;
  const so = body.stream_options;
  const includeUsage = stream && isRecord(so) && so.include_usage === true;
  return {
    kind,
    model,
    input,
    maxTokens,
    requestedMaxTokens: requested ?? null,
    stop,
    stopTokenIds: stopTokenIds as number[],
    minTokens,
    includeStopStrInOutput,
    skipSpecialTokens,
    returnTokenIds,
    topLogprobs,
    stream,
    includeUsage,
  };
}

/** A validated `/tokenize` request: the prompt as {@link expectedGeneration} takes it. */
export interface TokenizeRequest {
  input: GenerationInput;
  returnTokenStrs: boolean;
}

/**
 * Validate a `/tokenize` body: `{model?, prompt}` or `{model?, messages,
 * add_generation_prompt?, continue_final_message?}`; `add_special_tokens` is accepted (the
 * mock tokenizer adds none).
 */
export function parseTokenizeRequest(body: unknown, options: ResolvedOptions): TokenizeRequest {
  if (!isRecord(body)) throw badRequest('request body must be a JSON object');
  checkModel(body.model, options);
  optionalBoolean(body, 'add_special_tokens');
  const returnTokenStrs = optionalBoolean(body, 'return_token_strs') ?? false;
  if (body.messages !== undefined) return { input: chatInput(body), returnTokenStrs };
  if (typeof body.prompt !== 'string') {
    throw badRequest('prompt must be a string (or give messages)', 'prompt');
  }
  return { input: { kind: 'completion', prompt: body.prompt }, returnTokenStrs };
}

/** Validate a `/detokenize` body `{model?, tokens}`; returns the ids. */
export function parseDetokenizeRequest(body: unknown, options: ResolvedOptions): number[] {
  if (!isRecord(body)) throw badRequest('request body must be a JSON object');
  checkModel(body.model, options);
  const { tokens } = body;
  if (!Array.isArray(tokens) || !tokens.every((t) => Number.isSafeInteger(t))) {
    throw badRequest('tokens must be an array of integers', 'tokens');
  }
  checkTokenIds(tokens as number[], options);
  return tokens as number[];
}

/** vLLM's 400 when prompt plus `max_tokens` exceed the context length. */
export function checkContextLength(
  promptTokens: number,
  maxTokens: number,
  options: ResolvedOptions,
): void {
  if (promptTokens + maxTokens <= options.maxModelLen) return;
  throw badRequest(
    `This model's maximum context length is ${options.maxModelLen} tokens. However, you ` +
      `requested ${promptTokens + maxTokens} tokens (${promptTokens} in the messages, ` +
      `${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
    'max_tokens',
  );
}

/** A validated `/v1/embeddings` request. */
export interface EmbeddingRequest {
  model: string;
  inputs: string[];
  base64: boolean;
}

/** Validate an embeddings body (`input`: string, string[], token ids or arrays of them). */
export function parseEmbeddingRequest(body: unknown, options: ResolvedOptions): EmbeddingRequest {
  if (!isRecord(body)) throw badRequest('request body must be a JSON object');
  const model = checkModel(body.model, options);
  const input = body.input;
  let inputs: string[];
  if (typeof input === 'string') inputs = [input];
  else if (Array.isArray(input) && input.length > 0) {
    if (input.every((x) => typeof x === 'string')) inputs = input as string[];
    else if (input.every((x) => Number.isInteger(x))) inputs = [input.join(' ')];
    else if (input.every((x) => Array.isArray(x) && x.every((t) => Number.isInteger(t)))) {
      inputs = (input as number[][]).map((ids) => ids.join(' '));
    } else throw badRequest('input must be a string, strings or token ids', 'input');
  } else throw badRequest('input must be a non-empty string or array', 'input');
  const format = body.encoding_format;
  if (format !== undefined && format !== null && format !== 'float' && format !== 'base64') {
    throw badRequest('encoding_format must be "float" or "base64"', 'encoding_format');
  }
  return { model, inputs, base64: format === 'base64' };
}
