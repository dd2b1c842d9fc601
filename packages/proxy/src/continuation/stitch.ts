/**
 * The client's view of a generation that may run on several workers one after the other
 * (pure: no I/O). The first worker answers in the client's format (chat or completions);
 * each continuation answers `/v1/completions` and is re-shaped into that format, with the
 * first response's id, creation time and model. The stitcher keeps the prompt's token ids
 * and every generated id, the text the client has received, and what the client asked to
 * see (fields the proxy added are set back to `null`, as vLLM sends them when not asked).
 */
import { ParsedChat } from './parsed-chat.js';
import type { ContinuablePlan, InexactReason } from './plan.js';

type Json = Record<string, unknown>;

/** One upstream event, parsed. */
export type UpstreamEvent = Json;

/** What {@link Stitcher.accept} made of an upstream event. */
export interface Accepted {
  /** SSE text for a streaming client ('' when nothing is to be sent now). */
  out: string;
  /** The engine reported an error in the stream (`{"error": ...}`): pass it on and end. */
  error?: Json;
  /** The generation is finished (a finish reason, or a stop string found across a splice). */
  finished: boolean;
  /** The proxy found the end itself: the upstream is still generating and must be aborted. */
  abortUpstream: boolean;
}

const SSE = (object: unknown) => `data: ${JSON.stringify(object)}\n\n`;

/**
 * Holds back the text after a splice that could still begin a stop string, and finds stop
 * strings that span the splice (the continuing engine sees the text before the splice only
 * as its prompt). Without stop strings it holds nothing back.
 */
export class StopScanner {
  private buffer = '';
  private readonly keep: number;

  constructor(
    private readonly stops: readonly string[],
    private readonly includeStop: boolean,
  ) {
    this.keep = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** Add text; returns what can be released now, and the stop string if one was found. */
  push(text: string): { out: string; stop?: string } {
    this.buffer += text;
    let at = -1;
    let found: string | undefined;
    for (const stop of this.stops) {
      const i = this.buffer.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        found = stop;
      }
    }
    if (found !== undefined) {
      const out = this.buffer.slice(0, at + (this.includeStop ? found.length : 0));
      this.buffer = '';
      return { out, stop: found };
    }
    let cut = Math.max(0, this.buffer.length - this.keep);
    // Never split a surrogate pair between two chunks.
    if (cut > 0 && cut < this.buffer.length && isHighSurrogate(this.buffer.charCodeAt(cut - 1))) {
      cut--;
    }
    const out = this.buffer.slice(0, cut);
    this.buffer = this.buffer.slice(cut);
    return { out };
  }

  /** Release what is held back (the generation ended without a stop string). */
  flush(): string {
    const out = this.buffer;
    this.buffer = '';
    return out;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

const REPLACEMENT = '\ufffd';

const IDS_KEY = 'token_ids"';

/**
 * An event's JSON with the values of `"token_ids"` and `"prompt_token_ids"` set to null, as
 * vLLM sends them when they were not asked for. A quoted key followed by `:` cannot occur
 * inside a JSON string (its quotes would be escaped), and an array of integers holds no
 * `]`, so the fields are found exactly, by `indexOf` (a regular expression over every
 * event cost as much as the rest of the event's handling).
 */
export function withoutIds(json: string): string {
  let out = '';
  let from = 0;
  for (let at = json.indexOf(IDS_KEY); at >= 0; at = json.indexOf(IDS_KEY, at + 1)) {
    // `"token_ids"` or `"prompt_token_ids"` as a key: a quote before, `:` and `[` after.
    const before = json.charCodeAt(at - 1);
    const keyStart = before === 0x22 ? at - 1 : json.endsWith('"prompt_', at) ? at - 8 : -1;
    if (keyStart < 0) continue;
    let i = at + IDS_KEY.length;
    while (isSpace(json.charCodeAt(i))) i++;
    if (json.charCodeAt(i) !== 0x3a) continue;
    i++;
    while (isSpace(json.charCodeAt(i))) i++;
    if (json.charCodeAt(i) !== 0x5b) continue;
    const close = json.indexOf(']', i);
    if (close < 0) break;
    out += `${json.slice(from, i)}null`;
    from = close + 1;
    at = close;
  }
  return from === 0 ? json : out + json.slice(from);
}

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/**
 * Text an engine held back at a cut: the detokenization of every generated id minus what
 * the client received, without a trailing incomplete character (its bytes are ids at the
 * end of the continuation's prompt; the continuing engine emits the whole character).
 * `undefined` when the client's text is not a prefix of the detokenization.
 */
export function heldBackText(detokenized: string, received: string): string | undefined {
  if (!detokenized.startsWith(received)) return undefined;
  let end = detokenized.length;
  while (end > received.length && detokenized[end - 1] === REPLACEMENT) end--;
  return detokenized.slice(received.length, end);
}

interface CompletionLogprobs {
  text_offset: number[];
  token_logprobs: (number | null)[];
  tokens: string[];
  top_logprobs: (Record<string, number> | null)[];
}

const utf8 = (text: string) => [...Buffer.from(text, 'utf8')];

/** Length in code points, as Python (vLLM) counts a string. */
function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff) n++;
  }
  return n;
}

/** Each token's text offset: `base` plus the decoded lengths of the tokens before it. */
function tokenOffsets(tokens: readonly string[], base: number): number[] {
  const offsets: number[] = [];
  let at = base;
  for (const token of tokens) {
    offsets.push(at);
    at += codePoints(token);
  }
  return offsets;
}

/**
 * Follows one generation across workers and writes what the client sees.
 * @example
 * const stitcher = new Stitcher(plan);
 * const { out } = stitcher.accept(JSON.parse(payload)); // first worker, client's format
 * stitcher.splice(heldBack);                             // the worker died
 * stitcher.accept(JSON.parse(continuationPayload));      // /v1/completions, re-shaped
 */
export class Stitcher {
  /** The prompt's token ids (from the first chunk); undefined until seen. */
  promptIds: number[] | undefined;
  /** Every generated token id, across workers. */
  readonly ids: number[] = [];
  /** The text the client has received (or will, for a non-streaming client). */
  emitted = '';
  finishReason: string | null = null;
  stopReason: string | number | null = null;
  /** Continuations spliced in so far. */
  splices = 0;
  /** Reasons the stitched output may differ from an uncut one. */
  readonly inexact = new Set<InexactReason>();
  /** Chat output the engine parses: what the client received of it, and the replay. */
  readonly chat: ParsedChat | undefined;

  private id: string | undefined;
  private created: number | undefined;
  private model: string | undefined;
  private role = 'assistant';
  private usage: Json | undefined;
  private scanner: StopScanner | undefined;
  private readonly chatLogprobs: Json[] = [];
  private readonly completionLogprobs: CompletionLogprobs = {
    text_offset: [],
    token_logprobs: [],
    tokens: [],
    top_logprobs: [],
  };
  private finished = false;
  /** Text path: chunks with text so far, and at the last take-up (see {@link generated}). */
  private textChunks = 0;
  private generatedAtSplice = 0;

  constructor(private readonly plan: ContinuablePlan) {
    for (const reason of plan.inexact) this.inexact.add(reason);
    this.chat = plan.output === undefined ? undefined : new ParsedChat(plan.output);
  }

  /**
   * A cut from now on can be continued: the engine reported the prompt's ids (the ids
   * path), or the generation has started (the text path).
   */
  get tracked(): boolean {
    return this.plan.path === 'ids' ? this.promptIds !== undefined : this.id !== undefined;
  }

  /**
   * Tokens generated so far: every id on the ids path; on the text path, where the engine
   * sends no ids, its text chunks (one a token when the engine streams every token, as
   * SGLang does by default: an estimate).
   */
  get generated(): number {
    return this.plan.path === 'ids' ? this.ids.length : this.textChunks;
  }

  /**
   * Text path: a chunk of generated text counts one token, `""` included (an engine that
   * streams every token sends one for each part of a character), a chat stream's role
   * chunk not.
   */
  private countChunk(choice: Json, text: unknown): void {
    if (this.plan.path !== 'text' || typeof text !== 'string') return;
    if (typeof (choice.delta as Json | undefined)?.role === 'string') return;
    this.textChunks++;
  }

  get done(): boolean {
    return this.finished;
  }

  /** Tokens a continuation may still generate (undefined: up to the context length). */
  get tokensLeft(): number | undefined {
    return this.plan.maxTokens === undefined ? undefined : this.plan.maxTokens - this.generated;
  }

  /**
   * Take one upstream event (any worker) as the engine sent it, its JSON; see
   * {@link Accepted}. (A reader of the common token chunk that skips `JSON.parse` was tried
   * twice, a one-pass scanner and a comparison with the stream's previous chunk: on V8 each
   * cost about as much as `JSON.parse`, which is within a few tens of per cent of a plain
   * loop over the characters.)
   */
  acceptJson(raw: string): Accepted {
    let event: Json;
    try {
      event = JSON.parse(raw) as Json;
    } catch {
      event = { error: { message: 'the engine sent an unreadable event', type: 'server_error' } };
    }
    return this.accept(event, raw);
  }

  /**
   * Take one upstream event (any worker); see {@link Accepted}. `raw` is the event's JSON as
   * the engine sent it: a first-worker event is passed on as those bytes (its id fields
   * nulled in place), cheaper than serializing the parsed object again.
   */
  accept(event: UpstreamEvent, raw?: string): Accepted {
    if (event.error !== undefined) {
      if (this.finished) return { out: '', finished: true, abortUpstream: false };
      return { out: SSE(event), error: event, finished: false, abortUpstream: false };
    }
    const choice = (event.choices as Json[] | undefined)?.[0];
    if (choice === undefined) {
      // The usage chunk (`choices: []`, after the finish): kept for the trailer.
      if (event.usage !== undefined && event.usage !== null) this.usage = event.usage as Json;
      return { out: '', finished: this.finished, abortUpstream: false };
    }
    if (this.finished) return { out: '', finished: true, abortUpstream: false };
    return this.splices === 0
      ? this.acceptOwn(event, choice, raw)
      : this.acceptContinuation(choice);
  }

  /** An event of the first worker, already in the client's format. */
  private acceptOwn(event: Json, choice: Json, raw: string | undefined): Accepted {
    if (this.id === undefined) {
      this.id = event.id as string;
      this.created = event.created as number;
      this.model = event.model as string;
    }
    const promptIds = this.plan.kind === 'chat' ? event.prompt_token_ids : choice.prompt_token_ids;
    if (Array.isArray(promptIds)) this.promptIds = promptIds as number[];
    const ids = choice.token_ids;
    if (Array.isArray(ids)) for (const id of ids as number[]) this.ids.push(id);
    let text: unknown;
    if (this.plan.kind === 'chat') {
      const delta = choice.delta as Json | undefined;
      text = delta?.content;
      this.chat?.receive(delta);
      if (typeof delta?.role === 'string') this.role = delta.role;
      const content = (choice.logprobs as { content?: Json[] } | null | undefined)?.content;
      if (!this.plan.clientStream && Array.isArray(content)) this.chatLogprobs.push(...content);
    } else {
      text = choice.text;
      if (!this.plan.clientStream) this.keepCompletionLogprobs(choice.logprobs);
    }
    if (typeof text === 'string') this.emitted += text;
    this.countChunk(choice, text);
    const finished = this.noteFinish(choice);
    if (!this.plan.clientStream) return { out: '', finished, abortUpstream: false };
    if (raw !== undefined) {
      const text = this.plan.clientTokenIds ? raw : withoutIds(raw);
      return { out: `data: ${text}\n\n`, finished, abortUpstream: false };
    }
    if (!this.plan.clientTokenIds) {
      if ('prompt_token_ids' in event) event.prompt_token_ids = null;
      if ('prompt_token_ids' in choice) choice.prompt_token_ids = null;
      if ('token_ids' in choice) choice.token_ids = null;
    }
    return { out: SSE(event), finished, abortUpstream: false };
  }

  private noteFinish(choice: Json): boolean {
    const reason = choice.finish_reason;
    if (typeof reason !== 'string') return false;
    this.finishReason = reason;
    this.stopReason = (choice.stop_reason as string | number | null | undefined) ?? null;
    this.finished = true;
    return true;
  }

  /**
   * Take up a cut: `detokenized` is the text of every generated id (a worker's
   * `/detokenize`). What the client has not received of it goes out with the next chunk:
   * text the engine held back, or, when the engine parses chat output, what its parser had
   * not sent (the proxy's parser replays the raw text). A client that received something
   * else makes the continuation `text_mismatch`.
   */
  takeUp(detokenized: string): void {
    if (this.chat !== undefined) {
      if (!this.chat.splice(detokenized)) this.inexact.add('text_mismatch');
      this.pendingHeldBack = '';
      return;
    }
    const heldBack = heldBackText(detokenized, this.emitted);
    if (heldBack === undefined) this.inexact.add('text_mismatch');
    this.pendingHeldBack = heldBack ?? '';
  }

  /**
   * Take up a cut on the text path: the continuation goes on from the text the client
   * received; what the engine held back is generated again.
   */
  takeUpText(): void {
    this.pendingHeldBack = '';
    this.generatedAtSplice = this.generated;
  }

  /**
   * Start a continuation (after {@link takeUp}): the next events are a `/v1/completions`
   * stream whose prompt is the prompt's ids and {@link ids}.
   */
  splice(): void {
    this.splices++;
    this.scanner = new StopScanner(this.plan.stop, this.plan.includeStopStr);
  }

  private pendingHeldBack = '';

  /** Undo a {@link splice} whose continuation never sent an event (tried elsewhere). */
  unsplice(): void {
    this.splices--;
  }

  /**
   * An event of a continuation, re-shaped for the client: `text_completion` format, or
   * chat on the text path.
   */
  private acceptContinuation(choice: Json): Accepted {
    const scanner = this.scanner!;
    const ids = Array.isArray(choice.token_ids) ? (choice.token_ids as number[]) : [];
    for (const id of ids) this.ids.push(id);
    const own =
      typeof choice.text === 'string' ? choice.text : (choice.delta as Json | undefined)?.content;
    this.countChunk(choice, own);
    const text = this.pendingHeldBack + (typeof own === 'string' ? own : '');
    this.pendingHeldBack = '';
    const pushed = scanner.push(text);
    let out = pushed.out;
    const stop = pushed.stop;
    let abortUpstream = false;
    if (stop !== undefined) {
      this.finishReason = 'stop';
      this.stopReason = stop;
      this.finished = true;
      abortUpstream = choice.finish_reason === null || choice.finish_reason === undefined;
    } else if (typeof choice.finish_reason === 'string') {
      out += scanner.flush();
      this.noteFinish(choice);
    }
    const parsed = this.chat?.continue(out, this.finished);
    this.toolCallsFinish();
    // vLLM's streamed text_offset starts at the length of the text sent before the chunk.
    const logprobs = this.continuationLogprobs(choice.logprobs, codePoints(this.emitted));
    this.emitted += out;
    if (!this.plan.clientStream) return { out: '', finished: this.finished, abortUpstream };
    const tokenIds = this.plan.clientTokenIds ? ids : null;
    const finish = this.finished ? this.finishReason : null;
    const reshaped =
      this.plan.kind === 'chat'
        ? {
            index: 0,
            delta: parsed === undefined ? { content: out } : this.chat!.wireDelta(parsed),
            logprobs,
            finish_reason: finish,
            ...(this.finished ? { stop_reason: this.stopReason } : {}),
            token_ids: tokenIds,
          }
        : {
            index: 0,
            text: out,
            logprobs,
            finish_reason: finish,
            stop_reason: this.finished ? this.stopReason : null,
            prompt_token_ids: null,
            token_ids: tokenIds,
          };
    return { out: SSE(this.chunk([reshaped])), finished: this.finished, abortUpstream };
  }

  /**
   * Stitch a continuation's completions logprobs into the client's format. A streamed
   * completion's `text_offset` is `base` (the length of the text sent before the chunk)
   * plus the decoded lengths of the chunk's tokens before each one, as vLLM counts them.
   */
  private continuationLogprobs(raw: unknown, base: number): Json | null {
    if (raw === null || raw === undefined) return null;
    if (this.plan.kind === 'chat' && this.plan.path === 'text') {
      // A chat continuation: chat's own logprobs.
      const content = (raw as { content?: Json[] }).content ?? [];
      if (!this.plan.clientStream) this.chatLogprobs.push(...content);
      return { content };
    }
    const lp = raw as CompletionLogprobs;
    if (this.plan.kind === 'completion') {
      if (!this.plan.clientStream) {
        this.keepCompletionLogprobs(lp);
        return null;
      }
      return { ...lp, text_offset: tokenOffsets(lp.tokens, base) } as unknown as Json;
    }
    const k = this.plan.logprobs ?? 0;
    const content = lp.tokens.map((token, i) => {
      // By rank, as chat lists them: an object's integer-like keys ("6") enumerate first.
      const top = Object.entries(lp.top_logprobs[i] ?? {})
        .sort((a, b) => b[1] - a[1])
        .slice(0, k);
      // Completions key candidates by their text: two with the same text (parts of
      // characters, all '\ufffd') are one entry there, two in chat's list.
      if (top.length < k) this.inexact.add('top_logprobs');
      return {
        token,
        logprob: lp.token_logprobs[i] ?? null,
        bytes: utf8(token),
        top_logprobs: top.map(([t, logprob]) => ({ token: t, logprob, bytes: utf8(t) })),
      };
    });
    if (!this.plan.clientStream) this.chatLogprobs.push(...content);
    return { content };
  }

  private keepCompletionLogprobs(raw: unknown): void {
    if (raw === null || raw === undefined) return;
    const lp = raw as CompletionLogprobs;
    const kept = this.completionLogprobs;
    kept.token_logprobs.push(...lp.token_logprobs);
    kept.tokens.push(...lp.tokens);
    kept.top_logprobs.push(...lp.top_logprobs);
  }

  /** A finished answer that called tools ends with `tool_calls`, as the chat endpoint's. */
  private toolCallsFinish(): void {
    if (this.finished && this.finishReason === 'stop' && this.chat?.calledTools === true) {
      this.finishReason = 'tool_calls';
    }
  }

  /**
   * End the generation without another worker (after {@link takeUp}): no tokens are left
   * (`max_tokens` reached exactly at the cut). Returns the SSE text of the final chunk for
   * a streaming client.
   */
  finishByProxy(): string {
    const heldBack = this.pendingHeldBack;
    this.pendingHeldBack = '';
    this.finished = true;
    this.finishReason = 'length';
    this.stopReason = null;
    this.emitted += heldBack;
    const parsed = this.chat?.continue('', true);
    if (!this.plan.clientStream) return '';
    const choice =
      this.plan.kind === 'chat'
        ? {
            index: 0,
            delta: parsed === undefined ? { content: heldBack } : this.chat!.wireDelta(parsed),
            logprobs: null,
            finish_reason: 'length',
            stop_reason: null,
            token_ids: this.plan.clientTokenIds ? [] : null,
          }
        : {
            index: 0,
            text: heldBack,
            logprobs: null,
            finish_reason: 'length',
            stop_reason: null,
            prompt_token_ids: null,
            token_ids: this.plan.clientTokenIds ? [] : null,
          };
    return SSE(this.chunk([choice]));
  }

  /** Usage of the whole generation: the client's prompt and every generated token. */
  totalUsage(): Json | undefined {
    if (this.plan.path === 'text' && this.splices > 0 && this.usage !== undefined) {
      // The last continuation's usage, the text it was given counted as generated (by the
      // chunks that carried it: the engine's ids are not known).
      const { prompt_tokens: prompt, completion_tokens: completion } = this.usage as {
        prompt_tokens: number;
        completion_tokens: number;
      };
      const before = Math.min(this.generatedAtSplice, prompt);
      return {
        ...this.usage,
        prompt_tokens: prompt - before,
        completion_tokens: completion + before,
        total_tokens: prompt + completion,
      };
    }
    if (this.promptIds === undefined) return this.usage;
    const prompt = this.promptIds.length;
    const completion = this.ids.length;
    return {
      ...this.usage,
      prompt_tokens: prompt,
      total_tokens: prompt + completion,
      completion_tokens: completion,
    };
  }

  /** The end of a streaming response: the usage chunk when asked for, then `[DONE]`. */
  trailer(): string {
    const usage = this.totalUsage();
    const usageChunk =
      this.plan.clientUsage && usage !== undefined ? SSE({ ...this.chunk([]), usage }) : '';
    return `${usageChunk}data: [DONE]\n\n`;
  }

  private chunk(choices: Json[]): Json {
    return {
      id: this.id,
      object: this.plan.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created: this.created,
      model: this.model,
      choices,
    };
  }

  /** The whole response for a non-streaming client (the engine's own non-streaming shape). */
  assemble(): Json {
    const ids = this.plan.clientTokenIds ? this.ids : null;
    const promptIds = this.plan.clientTokenIds ? (this.promptIds ?? null) : null;
    const wantsLogprobs = this.plan.logprobs !== undefined;
    if (this.plan.kind === 'chat') {
      return {
        id: this.id,
        object: 'chat.completion',
        created: this.created,
        model: this.model,
        choices: [
          {
            index: 0,
            message:
              this.chat === undefined
                ? { role: this.role, content: this.emitted, tool_calls: [] }
                : this.chat.message(this.role),
            logprobs: wantsLogprobs ? { content: this.chatLogprobs } : null,
            finish_reason: this.finishReason,
            stop_reason: this.stopReason,
            token_ids: ids,
          },
        ],
        usage: this.totalUsage(),
        prompt_token_ids: promptIds,
      };
    }
    return {
      id: this.id,
      object: 'text_completion',
      created: this.created,
      model: this.model,
      choices: [
        {
          index: 0,
          text: this.emitted,
          // Non-streaming offsets count every token's decoded length from 0 (vLLM).
          logprobs: wantsLogprobs
            ? {
                ...this.completionLogprobs,
                text_offset: tokenOffsets(this.completionLogprobs.tokens, 0),
              }
            : null,
          finish_reason: this.finishReason,
          stop_reason: this.stopReason,
          prompt_token_ids: promptIds,
          token_ids: ids,
        },
      ],
      usage: this.totalUsage(),
    };
  }
}
