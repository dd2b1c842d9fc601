/**
 * What the engine generates, as a pure function of the request: the engine answers with
 * {@link expectedGeneration} and nothing else, so a checker that calls it knows exactly what
 * any request must have received.
 */
import { compileScript } from './options.js';
import type { CompiledRule, ScriptRule } from './options.js';
import { INITIAL_STATE, absorb, encode, nextPiece, pieceId, tokenize } from './tokenizer.js';

/** One chat message as the template sees it: a role and its text. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** vLLM's chat-template parameters (`add_generation_prompt`, `continue_final_message`). */
export interface ChatTemplateOptions {
  /** End with `<|assistant|>\n` so the model starts a new answer (default true). */
  addGenerationPrompt?: boolean;
  /** Leave the last message open so the model continues it (default false; wins over `addGenerationPrompt`). */
  continueFinalMessage?: boolean;
}

/** A request's prompt: chat messages or a completion prompt (text or token ids). */
export type GenerationInput =
  | ({ kind: 'chat'; messages: readonly ChatMessage[] } & ChatTemplateOptions)
  | { kind: 'completion'; prompt: string | readonly number[] };

/** The request's limits, and the engine's script if it has one. */
export interface GenerationLimits {
  /** `max_tokens`: at most this many tokens are generated. */
  maxTokens: number;
  /** Output is cut before the first of these strings (vLLM's default, not included). */
  stop?: readonly string[];
  /** Scripted answers (the engine's `script` option); a matching rule wins over generation. */
  script?: readonly ScriptRule[];
}

/** What the engine answers to one request. */
export interface Generation {
  /** The generated text: `tokens` joined. */
  text: string;
  /** The generated tokens, one per streamed content chunk. */
  tokens: string[];
  finishReason: 'stop' | 'length';
  /** The stop string that ended generation (vLLM's `stop_reason`), else null. */
  stopReason: string | null;
  /** Number of prompt token ids (`usage.prompt_tokens`). */
  promptTokens: number;
}

/**
 * The chat template: each message as `<|role|>\ncontent\n`, then `<|assistant|>\n` (the
 * generation prompt). With `continueFinalMessage` the last message has no closing newline
 * and no generation prompt follows, so generation continues that message.
 * @example
 * renderChatPrompt([{ role: 'user', content: 'Hi' }]); // '<|user|>\nHi\n<|assistant|>\n'
 */
export function renderChatPrompt(
  messages: readonly ChatMessage[],
  options: ChatTemplateOptions = {},
): string {
  const { addGenerationPrompt = true, continueFinalMessage = false } = options;
  const last = messages.length - 1;
  const text = messages
    .map((m, i) => `<|${m.role}|>\n${m.content}${continueFinalMessage && i === last ? '' : '\n'}`)
    .join('');
  return addGenerationPrompt && !continueFinalMessage ? `${text}<|assistant|>\n` : text;
}

/** The prompt's token ids: the chat template's text, a completion prompt's text, or its ids. */
export function encodePrompt(input: GenerationInput): number[] {
  if (input.kind === 'chat') return encode(renderChatPrompt(input.messages, input));
  return typeof input.prompt === 'string' ? encode(input.prompt) : [...input.prompt];
}

/**
 * The input that continues a generation from `generated`, the text produced so far: the
 * completion prompt followed by it, or the chat with it as an open final assistant message
 * (`continue_final_message: true`, `add_generation_prompt: false`; appended to that message
 * if the input already continued one). {@link expectedGeneration} of the result, with the
 * tokens left, is the rest of the original generation.
 * @example
 * const first = expectedGeneration(input, { maxTokens: 20 });
 * const sofar = first.tokens.slice(0, 5).join('');
 * expectedGeneration(continuationInput(input, sofar), { maxTokens: 15 }).tokens; // first.tokens.slice(5)
 */
export function continuationInput(input: GenerationInput, generated: string): GenerationInput {
  if (input.kind === 'completion') {
    const { prompt } = input;
    return {
      kind: 'completion',
      prompt: typeof prompt === 'string' ? prompt + generated : [...prompt, ...encode(generated)],
    };
  }
  const open = input.continueFinalMessage === true ? input.messages.at(-1) : undefined;
  const messages = open ? input.messages.slice(0, -1) : input.messages;
  const content = (open?.content ?? '') + generated;
  return {
    kind: 'chat',
    messages: [...messages, { role: open?.role ?? 'assistant', content }],
    continueFinalMessage: true,
    addGenerationPrompt: false,
  };
}

// What script rules match: the message contents joined by newlines, or the prompt.
function scriptSubject(input: GenerationInput): string {
  if (input.kind === 'chat') return input.messages.map((m) => m.content).join('\n');
  return typeof input.prompt === 'string' ? input.prompt : input.prompt.join(' ');
}

const compiledScripts = new WeakMap<readonly ScriptRule[], CompiledRule[]>();

function compiled(script: readonly ScriptRule[]): CompiledRule[] {
  let rules = compiledScripts.get(script);
  if (rules === undefined) {
    rules = compileScript(script);
    compiledScripts.set(script, rules);
  }
  return rules;
}

/** `count` tokens, each a function of every id before it (prompt and generated). */
function generate(promptIds: readonly number[], count: number): string[] {
  let state = promptIds.reduce(absorb, INITIAL_STATE);
  let last = promptIds.at(-1);
  const tokens: string[] = [];
  for (let i = 0; i < count; i++) {
    const piece = nextPiece(state, last);
    tokens.push(piece);
    last = pieceId(piece);
    state = absorb(state, last);
  }
  return tokens;
}

function cutAtStop(
  tokens: string[],
  stop: readonly string[],
): { tokens: string[]; stopReason: string } | undefined {
  const text = tokens.join('');
  let cut = -1;
  let stopReason = '';
  for (const s of stop) {
    if (s.length === 0) continue;
    const at = text.indexOf(s);
    if (at !== -1 && (cut === -1 || at < cut)) {
      cut = at;
      stopReason = s;
    }
  }
  if (cut === -1) return undefined;
  const kept: string[] = [];
  let length = 0;
  for (const token of tokens) {
    if (length + token.length > cut) {
      if (cut > length) kept.push(token.slice(0, cut - length));
      break;
    }
    kept.push(token);
    length += token.length;
  }
  return { tokens: kept, stopReason };
}

/**
 * Exactly what the engine answers to a request: the first matching script rule's response,
 * else `maxTokens` generated tokens, each a pure function of all token ids before it (a
 * rolling hash over the prompt's ids and the tokens generated so far). Cut at `maxTokens`,
 * then before the first stop string. Sending the prompt plus the first k generated tokens
 * ({@link continuationInput}) yields the remaining tokens (script answers are not continued).
 * Temperature and seed play no part: the engine is deterministic.
 * @example
 * const { text, finishReason } = expectedGeneration(
 *   { kind: 'chat', messages: [{ role: 'user', content: 'Hello' }] },
 *   { maxTokens: 16 },
 * );
 */
export function expectedGeneration(input: GenerationInput, limits: GenerationLimits): Generation {
  const promptIds = encodePrompt(input);
  const rules = limits.script === undefined ? [] : compiled(limits.script);
  const subject = rules.length > 0 ? scriptSubject(input) : '';
  const rule = rules.find((r) => r.match === undefined || r.match.test(subject));
  let tokens = rule ? tokenize(rule.response) : generate(promptIds, limits.maxTokens);
  let finishReason: 'stop' | 'length' = rule ? rule.finishReason : 'length';
  if (tokens.length > limits.maxTokens) {
    tokens = tokens.slice(0, Math.max(0, limits.maxTokens));
    finishReason = 'length';
  }
  const promptTokens = promptIds.length;
  const stopped = cutAtStop(tokens, limits.stop ?? []);
  if (stopped) {
    const { stopReason } = stopped;
    tokens = stopped.tokens;
    return { text: tokens.join(''), tokens, finishReason: 'stop', stopReason, promptTokens };
  }
  return { text: tokens.join(''), tokens, finishReason, stopReason: null, promptTokens };
}
