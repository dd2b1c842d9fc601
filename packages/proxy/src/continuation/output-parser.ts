/**
 * The raw text of a chat generation, as `/v1/completions` returns it with
 * `skip_special_tokens: false`, turned into what the engine's chat endpoint makes of it:
 * `reasoning`, `content` and `tool_calls` (pure, incremental: no I/O, and linear in the
 * text whatever its chunking: only a held-back suffix of a few characters is read again).
 *
 * Rules, per format:
 *
 * `tagged` (vLLM `deepseek_r1` / `qwen3` reasoning parsers, `hermes` tool parser):
 * - With reasoning on, the text is reasoning until the first `</think>` (as vLLM's
 *   deepseek_r1 parser streams it: DeepSeek-R1's template puts `<think>` in the prompt). A
 *   `<think>` exactly at the start of the text is dropped; one anywhere else is text.
 *   Reasoning is kept exactly, whitespace included; with no `</think>` at all, everything
 *   is reasoning. After `</think>` comes content, kept as is (its leading `\n\n` too).
 * - With tools on, content is the text before a `<tool_call>`. Each `<tool_call>` holds one
 *   JSON object, its members in any order: the `name` string is released whole, with the
 *   call's id, once its closing quote is read; the `arguments` value is released as its raw
 *   text (not re-serialized), as it arrives (held until the name is known, should
 *   `arguments` come first). Other members are skipped. An object without a `name`
 *   releases nothing; one without `arguments` leaves them `''`.
 * - After `</tool_call>`, whitespace is dropped; a further `<tool_call>` is the next call;
 *   any other text starts content again, kept as is (its whitespace too) up to the next
 *   `<tool_call>`.
 * - Text inside `<tool_call>` that is not such an object (or text between the object and
 *   `</tool_call>`) is dropped up to `</tool_call>`; what the call had released stays.
 * - `</think>` after the reasoning and `<think>` anywhere else are text; markers are not
 *   looked for inside JSON strings.
 *
 * `harmony` (gpt-oss): the text is a run of messages, each a header up to `<|message|>`
 * and a body up to `<|end|>`, `<|call|>` or `<|return|>`. A header is everything since the
 * previous message's end (`<|start|>assistant`, `<|channel|>…`, a recipient before or after
 * the channel, `<|constrain|>json`); it releases nothing, and a first message may start
 * with `<|channel|>`. The body goes, as vLLM routes it: channel `final` → content; channel
 * `analysis` or `commentary` with a recipient `to=functions.NAME` → tool call NAME
 * (released with an id and `''` arguments when `<|message|>` is read), the body its
 * arguments; other `commentary` → content; other `analysis` → reasoning; any other
 * channel is dropped.
 *
 * In every format only a suffix that may still become a marker (`</thi`, `<|`, …) is held
 * back; {@link OutputParser.finish} releases it as text of the segment it stands in
 * (dropped in a harmony header or a broken tool call, content after a tool call).
 */
import { randomBytes } from 'node:crypto';

/** The formats with a replay. */
export type ChatOutputFormat =
  /** gpt-oss: reasoning and tool calls. */
  | { kind: 'harmony' }
  /** `<think>…</think>` and/or Hermes `<tool_call>`. */
  | { kind: 'tagged'; reasoning: boolean; tools: boolean };

/** A piece of one tool call, by its index in the answer. */
export interface ToolCallDelta {
  index: number;
  /** On a call's first delta. */
  id?: string;
  /** On a call's first delta. */
  name?: string;
  arguments: string;
}

/** What a parser releases at once: text for each field, and pieces of tool calls. */
export interface OutputDelta {
  reasoning: string;
  content: string;
  /** At most one entry a call, in index order. */
  toolCalls: ToolCallDelta[];
}

/** Accumulated output (what a client has received, or what the parser has released). */
export interface ParsedOutput {
  reasoning: string;
  content: string;
  toolCalls: { name: string; arguments: string }[];
}

/** An incremental parser of one generation's raw text. */
export interface OutputParser {
  /**
   * Raw generated text in (in any chunking); what can be released now. Text that may still
   * be the start of a marker is held back.
   */
  push(text: string): OutputDelta;
  /**
   * The generation ended: release what is held (a partial marker becomes text of the
   * segment it is in). Call it once, last.
   */
  finish(): OutputDelta;
  /** Everything released so far, accumulated. */
  readonly released: ParsedOutput;
}

const THINK = '<think>';
const END_THINK = '</think>';
const TOOL_CALL = '<tool_call>';
const END_TOOL_CALL = '</tool_call>';
const MESSAGE = '<|message|>';
const MESSAGE_ENDS = ['<|end|>', '<|call|>', '<|return|>'];
const MESSAGE_STARTS = [MESSAGE];
const REASONING_ENDS = [END_THINK];
const CALL_STARTS = [TOOL_CALL];
const CALL_ENDS = [END_TOOL_CALL];

/** A tool call id as vLLM makes them. */
function defaultToolCallId(): string {
  return `chatcmpl-tool-${randomBytes(16).toString('hex')}`;
}

function emptyDelta(): OutputDelta {
  return { reasoning: '', content: '', toolCalls: [] };
}

/**
 * A parser of one generation's raw text, for the engine's chat output parsers.
 * @param newToolCallId the id of each tool call (default: `chatcmpl-tool-` + 32 hex digits).
 * @example
 * const parser = createOutputParser({ kind: 'tagged', reasoning: true, tools: false });
 * parser.push('<think>\nHm.</thi'); // { reasoning: '\nHm.', content: '', toolCalls: [] }
 * parser.push('nk>\n\nYes.');       // { reasoning: '', content: '\n\nYes.', toolCalls: [] }
 * parser.finish();
 */
export function createOutputParser(
  format: ChatOutputFormat,
  newToolCallId: () => string = defaultToolCallId,
): OutputParser {
  return format.kind === 'harmony'
    ? new HarmonyParser(newToolCallId)
    : new TaggedParser(format.reasoning, format.tools, newToolCallId);
}

/**
 * `full` minus `received`: what a client that received `received` still needs, or undefined
 * when `received` is not a prefix of `full` (per field: reasoning, content; tool calls by
 * index: name equal, arguments a prefix; no more calls than `full`). The delta's new calls
 * carry their name and an id from `newToolCallId`.
 * @example
 * remainder(parser.released, clientReceived); // what to send before the continuation's text
 */
export function remainder(
  full: ParsedOutput,
  received: ParsedOutput,
  newToolCallId: () => string = defaultToolCallId,
): OutputDelta | undefined {
  if (
    !full.reasoning.startsWith(received.reasoning) ||
    !full.content.startsWith(received.content) ||
    received.toolCalls.length > full.toolCalls.length
  ) {
    return undefined;
  }
  const known = received.toolCalls.length;
  for (let index = 0; index < known; index++) {
    const got = received.toolCalls[index];
    const call = full.toolCalls[index]!;
    if (got === undefined) continue;
    if (got.name !== call.name || !call.arguments.startsWith(got.arguments)) return undefined;
  }
  const toolCalls: ToolCallDelta[] = [];
  full.toolCalls.forEach((call, index) => {
    const got = received.toolCalls[index];
    if (got === undefined) {
      toolCalls.push({ index, id: newToolCallId(), name: call.name, arguments: call.arguments });
    } else if (call.arguments.length > got.arguments.length) {
      toolCalls.push({ index, arguments: call.arguments.slice(got.arguments.length) });
    }
  });
  return {
    reasoning: full.reasoning.slice(received.reasoning.length),
    content: full.content.slice(received.content.length),
    toolCalls,
  };
}

/** Add a delta to an accumulation (for tests and the stitcher). */
export function accumulate(into: ParsedOutput, delta: OutputDelta): void {
  into.reasoning += delta.reasoning;
  into.content += delta.content;
  for (const call of delta.toolCalls) {
    const known = (into.toolCalls[call.index] ??= { name: '', arguments: '' });
    if (call.name !== undefined) known.name += call.name;
    known.arguments += call.arguments;
  }
}

/** Where released text goes: a field, a tool call's arguments (its index), or nowhere. */
type Sink = 'reasoning' | 'content' | 'drop' | number;

/** The first of `markers` at or after `from` (every marker starts with `<`). */
interface Found {
  /** Where the marker starts; without a marker, where the releasable text ends. */
  at: number;
  marker: string | undefined;
}

/**
 * Find the first marker at or after `from`. Without one, `at` is the start of a suffix
 * that may still become a marker (to hold back), else the end of the text. Only the `<`
 * are looked at, each once: linear in the text.
 */
function seek(text: string, from: number, markers: readonly string[]): Found {
  for (let i = text.indexOf('<', from); i >= 0; i = text.indexOf('<', i + 1)) {
    for (const marker of markers) if (text.startsWith(marker, i)) return { at: i, marker };
    const rest = text.length - i;
    for (const marker of markers) {
      if (rest < marker.length && marker.startsWith(text.slice(i)))
        return { at: i, marker: undefined };
    }
  }
  return { at: text.length, marker: undefined };
}

/** Whether `text` from `at` to its end is a proper prefix of `marker`. */
function mayBecome(text: string, at: number, marker: string): boolean {
  return text.length - at < marker.length && marker.startsWith(text.slice(at));
}

/** JSON's whitespace. */
function isSpace(char: string | undefined): boolean {
  return char === ' ' || char === '\n' || char === '\t' || char === '\r';
}

/**
 * The shared half of the parsers: the held-back text, the delta being built and the
 * released accumulation. A format reads the text from an index and says where it stopped;
 * what is left is held for the next push.
 */
abstract class TextParser implements OutputParser {
  readonly released: ParsedOutput = { reasoning: '', content: '', toolCalls: [] };
  private held = '';
  private out = emptyDelta();
  private calls = 0;

  constructor(private readonly newToolCallId: () => string) {}

  push(text: string): OutputDelta {
    const buffer = this.held + text;
    this.held = buffer.slice(this.read(buffer, 0));
    return this.flush();
  }

  finish(): OutputDelta {
    if (this.held !== '') this.releaseHeld(this.held);
    this.held = '';
    return this.flush();
  }

  /** Read `text` from `at`; returns where it stopped (the start of a held-back suffix). */
  protected abstract read(text: string, at: number): number;

  /** The generation ended with `held` held back: release it as text of its segment. */
  protected abstract releaseHeld(held: string): void;

  protected emit(sink: Sink, text: string): void {
    if (text === '' || sink === 'drop') return;
    if (sink === 'reasoning') this.out.reasoning += text;
    else if (sink === 'content') this.out.content += text;
    else {
      const last = this.out.toolCalls.at(-1);
      if (last?.index === sink) last.arguments += text;
      else this.out.toolCalls.push({ index: sink, arguments: text });
    }
  }

  /** Release a new tool call's name (with its id); returns its index, the arguments' sink. */
  protected openCall(name: string): number {
    const index = this.calls++;
    this.out.toolCalls.push({ index, id: this.newToolCallId(), name, arguments: '' });
    return index;
  }

  private flush(): OutputDelta {
    const delta = this.out;
    this.out = emptyDelta();
    accumulate(this.released, delta);
    return delta;
  }
}

type TaggedMode =
  /** Nothing read yet: a `<think>` here is dropped. */
  | 'start'
  | 'reasoning'
  | 'content'
  /** Inside `<tool_call>`: the JSON object. */
  | 'call'
  /** After the object, before `</tool_call>`. */
  | 'callEnd'
  /** After `</tool_call>`: whitespace dropped until a `<tool_call>` or other text. */
  | 'afterCall'
  /** A broken call: dropped up to `</tool_call>`. */
  | 'skip';

/** `<think>…</think>` reasoning and/or Hermes `<tool_call>` (rules at the top of the file). */
class TaggedParser extends TextParser {
  private mode: TaggedMode;
  private call: ToolCallScanner | undefined;
  private readonly contentMarkers: readonly string[];

  constructor(reasoning: boolean, tools: boolean, newToolCallId: () => string) {
    super(newToolCallId);
    this.mode = reasoning ? 'start' : 'content';
    this.contentMarkers = tools ? CALL_STARTS : [];
  }

  protected read(text: string, at: number): number {
    let i = at;
    while (i < text.length) {
      switch (this.mode) {
        case 'start':
          if (text.startsWith(THINK, i)) i += THINK.length;
          else if (mayBecome(text, i, THINK)) return i;
          this.mode = 'reasoning';
          break;
        case 'reasoning':
        case 'content':
        case 'skip': {
          const markers =
            this.mode === 'reasoning'
              ? REASONING_ENDS
              : this.mode === 'content'
                ? this.contentMarkers
                : CALL_ENDS;
          const found = seek(text, i, markers);
          this.emit(this.mode === 'skip' ? 'drop' : this.mode, text.slice(i, found.at));
          if (found.marker === undefined) return found.at;
          i = found.at + found.marker.length;
          if (found.marker === TOOL_CALL) this.startCall();
          else this.mode = found.marker === END_THINK ? 'content' : 'afterCall';
          break;
        }
        case 'call': {
          const read = this.call!.read(text, i);
          i = read.next;
          if (read.status === 'broken') this.mode = 'skip';
          else if (read.status === 'end') this.mode = 'callEnd';
          break;
        }
        case 'callEnd':
        case 'afterCall': {
          while (isSpace(text[i])) i++;
          if (i === text.length) return i;
          const marker = this.mode === 'callEnd' ? END_TOOL_CALL : TOOL_CALL;
          if (text.startsWith(marker, i)) {
            i += marker.length;
            if (marker === TOOL_CALL) this.startCall();
            else this.mode = 'afterCall';
          } else if (mayBecome(text, i, marker)) {
            return i;
          } else {
            this.mode = this.mode === 'callEnd' ? 'skip' : 'content';
          }
          break;
        }
      }
    }
    return i;
  }

  protected releaseHeld(held: string): void {
    const sink =
      this.mode === 'start' ? 'reasoning' : this.mode === 'afterCall' ? 'content' : this.mode;
    this.emit(sink === 'reasoning' || sink === 'content' ? sink : 'drop', held);
  }

  private startCall(): void {
    this.mode = 'call';
    this.call = new ToolCallScanner({
      open: (name) => this.openCall(name),
      emit: (index, text) => this.emit(index, text),
    });
  }
}

/** The characters a JSON number, `true`, `false` or `null` is made of. */
const SCALAR = /[\w.+-]/;

/** How far a scanner read: more to come, its value ended, or the text is not what it reads. */
interface ScanResult {
  next: number;
  status: 'more' | 'end' | 'broken';
}

/**
 * The extent of one JSON value, read incrementally from its first character: strings and
 * nesting depth tracked, nothing else checked. A scalar (number, `true`, …) ends at the
 * first character that cannot be part of it, which is left unread.
 */
class JsonValueScanner {
  private started = false;
  private depth = 0;
  private inString = false;
  private escaped = false;
  private scalar = false;

  read(text: string, at: number): ScanResult {
    let i = at;
    while (i < text.length) {
      const char = text[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (char === '\\') this.escaped = true;
        else if (char === '"') {
          this.inString = false;
          if (this.depth === 0) return { next: i + 1, status: 'end' };
        }
      } else if (this.scalar) {
        if (!SCALAR.test(char!)) return { next: i, status: 'end' };
      } else if (char === '"') {
        this.inString = true;
      } else if (char === '{' || char === '[') {
        this.depth++;
      } else if (char === '}' || char === ']') {
        if (this.depth === 0) return { next: i, status: 'broken' };
        if (--this.depth === 0) return { next: i + 1, status: 'end' };
      } else if (!this.started) {
        if (!SCALAR.test(char!)) return { next: i, status: 'broken' };
        this.scalar = true;
      } else if (char === '<') {
        // Never outside a string in JSON: a marker, the call is cut short.
        return { next: i, status: 'broken' };
      }
      this.started = true;
      i++;
    }
    return { next: i, status: 'more' };
  }
}

type CallState = 'open' | 'key' | 'keyString' | 'colon' | 'valueStart' | 'value' | 'afterValue';

/** The punctuation each state between a key and a value expects, and the state after it. */
const PUNCTUATION: Record<
  Exclude<CallState, 'keyString' | 'value'>,
  Partial<Record<string, CallState | 'end'>>
> = {
  open: { '{': 'key' },
  key: { '}': 'end' },
  colon: { ':': 'valueStart' },
  valueStart: {},
  afterValue: { ',': 'key', '}': 'end' },
};

/** What a {@link ToolCallScanner} releases through. */
interface CallSink {
  /** The name is known: the call opens; returns its index. */
  open(name: string): number;
  emit(index: number, text: string): void;
}

/**
 * The JSON object inside one `<tool_call>`, read incrementally:
 * `{"name": "…", "arguments": …}` with its members in any order. The name is released
 * whole, the arguments' raw text as it arrives.
 */
class ToolCallScanner {
  private state: CallState = 'open';
  private value = new JsonValueScanner();
  /** The raw text of the key or of the name being read. */
  private raw = '';
  private member: 'name' | 'arguments' | 'other' = 'other';
  private index: number | undefined;
  private sawArguments = false;
  /** Arguments read before the name. */
  private early = '';

  constructor(private readonly sink: CallSink) {}

  read(text: string, at: number): ScanResult {
    let i = at;
    while (i < text.length) {
      if (this.state === 'keyString' || this.state === 'value') {
        const read = this.value.read(text, i);
        const piece = text.slice(i, read.next);
        i = read.next;
        if (this.state === 'keyString') this.raw += piece;
        else this.take(piece);
        if (read.status === 'broken') return read;
        if (read.status === 'end' && !this.ended()) return { next: i, status: 'broken' };
        continue;
      }
      const char = text[i]!;
      if (isSpace(char)) {
        i++;
      } else if (this.state === 'valueStart' || (this.state === 'key' && char === '"')) {
        // A value's first character, or a key's quote, is read by its scanner.
        this.startValue(this.state === 'key' ? 'keyString' : 'value');
      } else {
        const next = PUNCTUATION[this.state][char];
        if (next === undefined) return { next: i, status: 'broken' };
        i++;
        if (next === 'end') return { next: i, status: 'end' };
        this.state = next;
      }
    }
    return { next: i, status: 'more' };
  }

  private startValue(state: 'keyString' | 'value'): void {
    this.state = state;
    this.value = new JsonValueScanner();
    this.raw = '';
  }

  /** A piece of a member's value. */
  private take(text: string): void {
    if (this.member === 'name') this.raw += text;
    else if (this.member === 'arguments') {
      if (this.index === undefined) this.early += text;
      else this.sink.emit(this.index, text);
    }
  }

  /** A key or a value ended; false when it is a key or a name but not a string. */
  private ended(): boolean {
    if (this.state === 'keyString') {
      const key = parseString(this.raw);
      if (key === undefined) return false;
      this.member =
        key === 'name' && this.index === undefined
          ? 'name'
          : key === 'arguments' && !this.sawArguments
            ? 'arguments'
            : 'other';
      this.state = 'colon';
      return true;
    }
    this.state = 'afterValue';
    if (this.member === 'arguments') this.sawArguments = true;
    if (this.member !== 'name') return true;
    const name = parseString(this.raw);
    if (name === undefined) return false;
    this.index = this.sink.open(name);
    this.sink.emit(this.index, this.early);
    this.early = '';
    return true;
  }
}

/** A JSON string's value, or undefined when `raw` is not one. */
function parseString(raw: string): string | undefined {
  try {
    const value: unknown = JSON.parse(raw);
    return typeof value === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** gpt-oss Harmony messages (rules at the top of the file). */
class HarmonyParser extends TextParser {
  private inBody = false;
  private header = '';
  private sink: Sink = 'drop';

  protected read(text: string, at: number): number {
    let i = at;
    while (i < text.length) {
      const found = seek(text, i, this.inBody ? MESSAGE_ENDS : MESSAGE_STARTS);
      const piece = text.slice(i, found.at);
      if (this.inBody) this.emit(this.sink, piece);
      else this.header += piece;
      if (found.marker === undefined) return found.at;
      i = found.at + found.marker.length;
      if (this.inBody) this.sink = 'drop';
      else {
        this.sink = this.route(this.header);
        this.header = '';
      }
      this.inBody = !this.inBody;
    }
    return i;
  }

  protected releaseHeld(held: string): void {
    if (this.inBody) this.emit(this.sink, held);
  }

  /** Where a message's body goes, from its header (opening its tool call). */
  private route(header: string): Sink {
    const channel = /<\|channel\|>\s*([^\s<]+)/.exec(header)?.[1];
    const recipient = /(?:^|[\s>])to=([^\s<]+)/.exec(header)?.[1];
    if (channel === 'final') return 'content';
    if (channel !== 'analysis' && channel !== 'commentary') return 'drop';
    if (recipient?.startsWith('functions.')) {
      return this.openCall(recipient.slice('functions.'.length));
    }
    return channel === 'analysis' ? 'reasoning' : 'content';
  }
}
