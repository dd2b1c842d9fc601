import type { ResolvedOptions } from './options.js';
import { countTokens } from './text.js';

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
  /** The prompt, or the chat messages' contents joined by newlines. */
  prompt: string;
  promptTokens: number;
  maxTokens: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

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

function promptText(prompt: unknown): string {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length === 1 && typeof prompt[0] === 'string') return prompt[0];
    // A single prompt given as token ids.
    if (prompt.length > 0 && prompt.every((t) => Number.isInteger(t))) return prompt.join(' ');
  }
  throw badRequest(
    'prompt must be a string, an array with one string, or an array of token ids',
    'prompt',
  );
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
  let prompt: string;
  if (kind === 'chat') {
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.length === 0) {
      throw badRequest('messages must be a non-empty array', 'messages');
    }
    prompt = messages
      .map((m: unknown, i) => {
        if (!isRecord(m) || typeof m.role !== 'string') {
          throw badRequest(`messages[${i}] must be an object with a string role`, 'messages');
        }
        return messageText(m.content, i);
      })
      .join('\n');
  } else {
    if (body.prompt === undefined) throw badRequest('prompt is required', 'prompt');
    prompt = promptText(body.prompt);
  }
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) {
    throw badRequest('the mock engine supports only n = 1', 'n');
  }
  const promptTokens = countTokens(prompt);
  const requested =
    optionalPositiveInt(body, 'max_completion_tokens') ?? optionalPositiveInt(body, 'max_tokens');
  const maxTokens = requested ?? options.maxTokensDefault;
  if (promptTokens + maxTokens > options.maxModelLen) {
    throw badRequest(
      `This model's maximum context length is ${options.maxModelLen} tokens. However, you ` +
        `requested ${promptTokens + maxTokens} tokens (${promptTokens} in the messages, ` +
        `${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
      'max_tokens',
    );
  }
  let stop: string[] = [];
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.every((s) => typeof s === 'string')) {
    stop = body.stop as string[];
  } else if (body.stop !== undefined && body.stop !== null) {
    throw badRequest('stop must be a string or an array of strings', 'stop');
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw badRequest('stream must be a boolean', 'stream');
  }
  const stream = body.stream === true;
  const so = body.stream_options;
  const includeUsage = stream && isRecord(so) && so.include_usage === true;
  return { kind, model, prompt, promptTokens, maxTokens, stop, stream, includeUsage };
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
