/**
 * What the engine generates, as a pure function of the request: the engine answers with
 * {@link expectedGeneration} and nothing else, so a checker that calls it knows exactly what
 * any request must have received.
 */
import { renderChatPrompt } from './chat-template.js';
import type { ChatMessage, ChatTemplateOptions } from './chat-template.js';
import { openDocument } from './document.js';
import type { Role } from './document.js';
import { compileScript } from './options.js';
import type { CompiledRule, ScriptRule } from './options.js';
import { resolveOutputFormat } from './output-format.js';
import type { OutputFormat } from './output-format.js';
import {
  INITIAL_STATE,
  VOCABULARY_SIZE,
  absorb,
  countTokens,
  createStreamDecoder,
  encode,
  mix,
  nextToken,
  pieceIds,
  tokenize,
  vocabularySize,
} from './tokenizer.js';
import type { TokenizerOptions } from './tokenizer.js';

/** A request's prompt: chat messages or a completion prompt (text or token ids). */
export type GenerationInput =
  | ({ kind: 'chat'; messages: readonly ChatMessage[] } & ChatTemplateOptions)
  | { kind: 'completion'; prompt: string | readonly number[] };

/** The request's sampling limits (vLLM's names in camelCase), and the engine's script and format. */
export interface GenerationLimits {
  /** `max_tokens`: at most this many tokens are generated. */
  maxTokens: number;
  /** `stop`: output is cut before the first stop string generated (vLLM's rules, see below). */
  stop?: readonly string[];
  /** `stop_token_ids`: a generated id in this list ends generation (its text is left out). */
  stopTokenIds?: readonly number[];
  /** `min_tokens`: no stop id before this many tokens, no stop string before more than this many. */
  minTokens?: number;
  /** `include_stop_str_in_output`: keep the stop string in the text (and hold nothing back). */
  includeStopStrInOutput?: boolean;
  /** `skip_special_tokens` (default true): special tokens' text is left out of the output text. */
  skipSpecialTokens?: boolean;
  /** Top logprobs wanted per token (chat `top_logprobs`, completions `logprobs`); absent = none. */
  topLogprobs?: number;
  /** Scripted answers (the engine's `script` option); a matching rule wins over generation. */
  script?: readonly ScriptRule[];
  /** The engine's `outputFormat`: structured answers after `<|assistant|>\n` (see the README). */
  outputFormat?: OutputFormat;
  /**
   * The engine's `merges`: the prompt's text is encoded with the byte-pair merges (the
   * generated ids are not merged; see the README).
   */
  merges?: boolean;
}

/** One candidate of a token's logprobs: a token id and its log-probability. */
export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** What the engine answers to one request, token by token. */
export interface Generation {
  /** The prompt's token ids (`prompt_token_ids`; `usage.prompt_tokens` is their count). */
  promptIds: number[];
  /** Every generated token id (the stream's `token_ids` concatenated). */
  ids: number[];
  /** The ids of each streamed chunk: one id each (a scripted answer: one piece each). */
  chunkIds: number[][];
  /** The text of each streamed chunk, as vLLM's detokenizer releases it (`""` included). */
  deltas: string[];
  /** The whole text (non-streaming `content`/`text`): `deltas` joined. */
  text: string;
  finishReason: 'stop' | 'length';
  /** vLLM's `stop_reason`: the stop string or stop token id that ended generation, else null. */
  stopReason: string | number | null;
  /** `usage.prompt_tokens`. */
  promptTokens: number;
  /** `usage.completion_tokens`: the number of chunks (= `ids.length` unless scripted). */
  completionTokens: number;
  /** With `topLogprobs`: for each id of `ids`, the top candidates, the chosen id first. */
  logprobs?: TokenLogprob[][];
}

/**
 * The prompt's token ids: the chat template's text, a completion prompt's text (encoded
 * with the merges when `options.merges`), or its ids as they are.
 */
export function encodePrompt(input: GenerationInput, options: TokenizerOptions = {}): number[] {
  if (input.kind === 'chat') return encode(renderChatPrompt(input.messages, input), options);
  return typeof input.prompt === 'string' ? encode(input.prompt, options) : [...input.prompt];
}

/** How many prompt tokens {@link encodePrompt} makes of `input`, without making them. */
export function promptTokenCount(input: GenerationInput, options: TokenizerOptions = {}): number {
  if (input.kind === 'chat') return countTokens(renderChatPrompt(input.messages, input), options);
  return typeof input.prompt === 'string'
    ? countTokens(input.prompt, options)
    : input.prompt.length;
}

/**
 * The input that continues a generation after `generatedIds`, the ids produced so far: a
 * completion whose prompt is the original prompt's ids followed by them. Its
 * {@link expectedGeneration}, with the tokens left, is the rest of the original generation,
 * also when the cut falls inside a multi-byte character. With `merges`, pass the engine's
 * option here too: the prompt's ids are then the merged ones the engine made.
 * @example
 * const first = expectedGeneration(input, { maxTokens: 20 });
 * expectedGeneration(continuationInput(input, first.ids.slice(0, 5)), { maxTokens: 15 }).ids;
 * // first.ids.slice(5)
 */
export function continuationInput(
  input: GenerationInput,
  generatedIds: readonly number[],
  options: TokenizerOptions = {},
): GenerationInput {
  return { kind: 'completion', prompt: [...encodePrompt(input, options), ...generatedIds] };
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

/** Python's `len`: a string's length in code points. */
export function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * vLLM's `check_stop_strings` over the output's code points: the first stop string (in list
 * order) that the last `newChars` characters complete; the cut (-1: keep everything).
 */
function checkStopStrings(
  chars: readonly string[],
  newChars: number,
  stop: readonly string[],
  includeInOutput: boolean,
): [string, number] | undefined {
  if (newChars === 0) return undefined;
  for (const s of stop) {
    const length = codePoints(s);
    if (length === 0) continue;
    const from = Math.max(0, chars.length + 1 - newChars - length);
    const window = chars.slice(from).join('');
    const at = window.indexOf(s);
    if (at === -1) continue;
    let index = from + codePoints(window.slice(0, at));
    if (includeInOutput) {
      index += length;
      if (index >= chars.length) return [s, -1];
    }
    return [s, index];
  }
  return undefined;
}

/**
 * The top `k` candidates of the token chosen after a sequence whose rolling hash is `state`:
 * the chosen id first (it is the top-1), then `k - 1` other ids (of a vocabulary of `size`)
 * with lower logprobs, all a pure function of the ids so far.
 */
export function topLogprobs(
  state: number,
  chosen: number,
  k: number,
  size = VOCABULARY_SIZE,
): TokenLogprob[] {
  const first = -((mix(state, 0x9e3779b9) % 2000) + 1) / 1000;
  const out: TokenLogprob[] = [{ id: chosen, logprob: first }];
  const seen = new Set([chosen]);
  let logprob = first;
  for (let salt = 1; out.length < Math.max(1, k); salt++) {
    const id = mix(state, salt) % size;
    if (seen.has(id)) continue;
    seen.add(id);
    logprob -= 0.25 + (mix(state, salt + 0x1000) % 1000) / 1000;
    out.push({ id, logprob: Math.round(logprob * 1e6) / 1e6 });
  }
  return out;
}

/**
 * What the chat endpoint's parsers need of a generation, beyond its text: each generated
 * id's role in a structured answer (see `document.ts`; `content` outside one).
 */
export interface GenerationTrace {
  /** Each generated id's role. */
  roles: Role[];
  /**
   * The parsed tool call of the answer's document: its name, and the index (in `ids`) of the
   * id completing its header (-1 when not generated); undefined when there is none.
   */
  call: { name: string; at: number } | undefined;
  /** For each generated id, the output's length (code points) once it was decoded. */
  charEnds: number[];
  /** For each chunk, the output's length (code points) released up to it. */
  releasedEnds: number[];
}

/**
 * Exactly what the engine answers to a request, chunk by chunk: the first matching script
 * rule's response (one chunk per piece), else up to `maxTokens` generated tokens, each a pure
 * function of all token ids before it (the prompt's and the generated ones). The text of each
 * chunk is what vLLM's incremental detokenizer releases: `""` while a character is incomplete,
 * the whole character once complete, stop strings applied as vLLM applies them (the first
 * stop string completed ends generation with the text cut before it; while streaming the last
 * `maxStopLength - 1` characters are held back until they cannot start a stop string, flushed
 * by the final chunk). Sending the prompt's ids plus the first k generated ids
 * ({@link continuationInput}) yields the remaining ids. Temperature and seed play no part.
 * @example
 * const { text, ids, finishReason } = expectedGeneration(
 *   { kind: 'chat', messages: [{ role: 'user', content: 'Hello' }] },
 *   { maxTokens: 16, stop: ['\n'] },
 * );
 */
export function expectedGeneration(input: GenerationInput, limits: GenerationLimits): Generation {
  return traceGeneration(input, limits).generation;
}

/** {@link expectedGeneration}, and its {@link GenerationTrace}. */
export function traceGeneration(
  input: GenerationInput,
  limits: GenerationLimits,
): { generation: Generation; trace: GenerationTrace } {
  const tokenizer: TokenizerOptions = { merges: limits.merges ?? false };
  const promptIds = encodePrompt(input, tokenizer);
  const size = vocabularySize(tokenizer);
  const rules = limits.script === undefined ? [] : compiled(limits.script);
  const subject = rules.length > 0 ? scriptSubject(input) : '';
  const rule = rules.find((r) => r.match === undefined || r.match.test(subject));
  const scripted = rule ? tokenize(rule.response).map(pieceIds) : undefined;
  const format = scripted ? undefined : resolveOutputFormat(limits.outputFormat);
  const document = format && openDocument(promptIds, format);
  const stop = limits.stop ?? [];
  const stopTokenIds = limits.stopTokenIds ?? [];
  const minTokens = limits.minTokens ?? 0;
  const include = limits.includeStopStrInOutput ?? false;
  const bufferLength = stop.length > 0 && !include ? Math.max(...stop.map(codePoints)) - 1 : 0;

  const all = [...promptIds];
  let state = promptIds.reduce(absorb, INITIAL_STATE);
  // A script's answer is its text as written: skip_special_tokens applies to generated ids.
  const skipSpecial = !scripted && (limits.skipSpecialTokens ?? true);
  const decodeNext = createStreamDecoder(promptIds, skipSpecial);
  const ids: number[] = [];
  const chunkIds: number[][] = [];
  const deltas: string[] = [];
  const logprobs: TokenLogprob[][] = [];
  const chars: string[] = []; // the output text, one code point each (Python's str indexing)
  const called = document?.document.call;
  const trace: GenerationTrace = {
    roles: [],
    call: called === undefined ? undefined : { name: called, at: -1 },
    charEnds: [],
    releasedEnds: [],
  };
  let released = 0;
  let finishReason: 'stop' | 'length' = 'length';
  let stopReason: string | number | null = null;

  for (let n = 1; n <= limits.maxTokens; n++) {
    let step: number[];
    let role: Role = 'content';
    let documentEnd: 'eos' | 'stop-token' | 'last' | undefined;
    if (scripted) {
      const piece = scripted[n - 1];
      if (piece === undefined) break; // an empty script answer
      step = piece;
    } else {
      const next = document?.next() ?? 'free';
      if (next === 'done') {
        // The prompt holds the whole document already: nothing is left to write.
        finishReason = 'stop';
        break;
      }
      if (next === 'free') step = [nextToken(all, state)];
      else {
        step = [next.id];
        role = next.role;
        if (next.call && trace.call) trace.call.at = ids.length;
        if (next.last) documentEnd = document?.document.end;
      }
    }
    for (const id of step) {
      if (limits.topLogprobs !== undefined)
        logprobs.push(topLogprobs(state, id, limits.topLogprobs, size));
      all.push(id);
      state = absorb(state, id);
      ids.push(id);
      document?.push(id);
      trace.roles.push(role);
    }
    chunkIds.push(step);
    // The scheduler's checks (vLLM's check_stop): length first, then the end of a document
    // (Harmony's <|return|> is gpt-oss's EOS, <|call|> a stop id of its generation config),
    // then stop ids after min_tokens.
    let finished = false;
    let stoppedById = false;
    const last = step.at(-1) ?? -1;
    if (n >= limits.maxTokens) finished = true;
    else if (documentEnd !== undefined) {
      finished = true;
      finishReason = 'stop';
      stoppedById = documentEnd !== 'last';
      if (documentEnd === 'stop-token') stopReason = last;
    } else if (n >= minTokens && stopTokenIds.includes(last)) {
      finished = stoppedById = true;
      finishReason = 'stop';
      stopReason = last;
    } else if (scripted && n === scripted.length) {
      finished = true;
      finishReason = rule?.finishReason ?? 'stop';
    }
    // The detokenizer: the stop id's own text is left out unless include_stop_str_in_output.
    let checkFrom = chars.length;
    const shown = stoppedById && !include ? step.length - 1 : step.length;
    step.forEach((id, i) => {
      if (i < shown) for (const c of decodeNext(id)) chars.push(c);
      trace.charEnds.push(chars.length);
    });
    if (minTokens > 0 && n <= minTokens) checkFrom = chars.length;
    if (stop.length > 0 && n > minTokens) {
      const hit = checkStopStrings(chars, chars.length - checkFrom, stop, include);
      if (hit) {
        [stopReason] = hit;
        finishReason = 'stop';
        finished = true;
        if (hit[1] !== -1) chars.length = hit[1];
      }
    }
    const upTo = chars.length - (finished ? 0 : bufferLength);
    deltas.push(released < upTo ? chars.slice(released, upTo).join('') : '');
    released = Math.max(released, upTo);
    trace.releasedEnds.push(released);
    if (finished) break;
  }
  if (scripted?.length === 0) finishReason = rule?.finishReason ?? 'stop';
  const generation: Generation = {
    promptIds,
    ids,
    chunkIds,
    deltas,
    text: chars.join(''),
    finishReason,
    stopReason,
    promptTokens: promptIds.length,
    completionTokens: chunkIds.length,
    ...(limits.topLogprobs === undefined ? {} : { logprobs }),
  };
  return { generation, trace };
}
