/**
 * The client's side of a chat generation whose output the engine parses (reasoning, tool
 * calls), across workers (pure: no I/O). The first worker's deltas are parsed by the engine;
 * this records what the client received of them. After a cut the proxy parses the raw text
 * of every generated id itself ({@link ParsedChat.splice}): the parser's state at the cut
 * is taken from the raw text, and what the engine had parsed but not yet sent (a held back
 * marker's neighbourhood) is the difference with what the client received. A continuation's
 * raw text then goes through the same parser, and its deltas are shaped as the engine's.
 */
import {
  accumulate,
  createOutputParser,
  remainder,
  type ChatOutputFormat,
  type OutputDelta,
  type OutputParser,
  type ParsedOutput,
} from './output-parser.js';

type Json = Record<string, unknown>;

const REPLACEMENT = '\ufffd';

const empty = (): OutputDelta => ({ reasoning: '', content: '', toolCalls: [] });

/** One tool call of a chat delta, as vLLM streams it. */
interface WireToolCall {
  index?: unknown;
  id?: unknown;
  function?: { name?: unknown; arguments?: unknown } | null;
}

/**
 * What a client received of a parsed chat generation, and the proxy's parser after a cut.
 * @example
 * const chat = new ParsedChat({ kind: 'harmony' });
 * chat.receive(delta);                     // each first-worker delta
 * chat.splice(detokenizedText);            // the worker died
 * const next = chat.continue(rawText);     // each continuation chunk's raw text
 * const wire = chat.wireDelta(next);       // `{ reasoning?, content?, tool_calls? }`
 */
export class ParsedChat {
  /** What the client has received (or will, for a non-streaming client). */
  readonly received: ParsedOutput = { reasoning: '', content: '', toolCalls: [] };
  /** Each tool call's id, by index (the engine's, then the proxy's). */
  private readonly ids: string[] = [];
  /** The field the engine sends reasoning in: vLLM main `reasoning`, older `reasoning_content`. */
  private reasoningField = 'reasoning';
  private parser: OutputParser | undefined;
  private pending: OutputDelta = empty();
  /** The client received text the parser still holds back (see {@link splice}). */
  private behind = false;

  constructor(private readonly format: ChatOutputFormat) {}

  /** Whether the answer called a tool (its finish reason is then `tool_calls`). */
  get calledTools(): boolean {
    return this.received.toolCalls.length > 0;
  }

  /** A first-worker delta (already parsed by the engine). */
  receive(delta: Json | undefined): void {
    if (delta === undefined || delta === null) return;
    if (typeof delta.content === 'string') this.received.content += delta.content;
    for (const field of ['reasoning', 'reasoning_content']) {
      const text = delta[field];
      if (typeof text === 'string') {
        this.reasoningField = field;
        this.received.reasoning += text;
      }
    }
    const calls = delta.tool_calls;
    if (!Array.isArray(calls)) return;
    for (const call of calls as WireToolCall[]) {
      const index = typeof call.index === 'number' ? call.index : this.received.toolCalls.length;
      const known = (this.received.toolCalls[index] ??= { name: '', arguments: '' });
      if (typeof call.id === 'string') this.ids[index] = call.id;
      const fn = call.function;
      if (typeof fn?.name === 'string') known.name += fn.name;
      if (typeof fn?.arguments === 'string') known.arguments += fn.arguments;
    }
  }

  /**
   * Take up a cut: `detokenized` is the raw text of every generated id. Returns false when
   * what the client received is not what the parser makes of that text (the continuation
   * is then inexact: the client's output goes on from the parser's view).
   */
  splice(detokenized: string): boolean {
    // A trailing incomplete character: the continuing engine emits it whole.
    let end = detokenized.length;
    while (end > 0 && detokenized[end - 1] === REPLACEMENT) end--;
    const raw = detokenized.slice(0, end);
    const parser = createOutputParser(this.format);
    parser.push(raw);
    this.parser = parser;
    this.behind = false;
    this.pending = empty();
    const rest = remainder(parser.released, this.received);
    if (rest !== undefined) {
      this.pending = rest;
      return true;
    }
    // The parser holds back a text end that may still begin a marker (`<`, `<|`, `</th`),
    // which the engine, whose markers are single tokens, had sent as text: the client is
    // ahead of the parser until the parser releases it. Anything else is a mismatch.
    const whole = createOutputParser(this.format);
    whole.push(raw);
    whole.finish();
    this.behind = remainder(whole.released, this.received) !== undefined;
    return this.behind;
  }

  /**
   * A continuation's raw text (after stop strings); `final` at the generation's end.
   * Returns what the client still needs of it.
   */
  continue(text: string, final: boolean): OutputDelta {
    const parser = this.parser!;
    const released = parser.push(text);
    if (final) merge(released, parser.finish());
    let delta: OutputDelta;
    if (this.behind) {
      // Until the parser has released what the client has: the difference, once it is one.
      const rest = remainder(parser.released, this.received);
      if (rest === undefined) return empty();
      this.behind = false;
      delta = rest;
    } else {
      delta = this.pending;
      this.pending = empty();
      merge(delta, released);
    }
    accumulate(this.received, delta);
    for (const call of delta.toolCalls) if (call.id !== undefined) this.ids[call.index] = call.id;
    return delta;
  }

  /** A delta in the engine's chat shape: only the fields with something in them. */
  wireDelta(delta: OutputDelta): Json {
    const out: Json = {};
    if (delta.reasoning !== '') out[this.reasoningField] = delta.reasoning;
    if (delta.content !== '') out.content = delta.content;
    if (delta.toolCalls.length > 0) {
      out.tool_calls = delta.toolCalls.map((call) =>
        call.name === undefined
          ? { index: call.index, function: { arguments: call.arguments } }
          : {
              index: call.index,
              id: call.id ?? this.ids[call.index],
              type: 'function',
              function: { name: call.name, arguments: call.arguments },
            },
      );
    }
    return out;
  }

  /** The non-streaming `message` (vLLM's shape: content null when only tools were called). */
  message(role: string): Json {
    const { reasoning, content, toolCalls } = this.received;
    return {
      role,
      content: content === '' && toolCalls.length > 0 ? null : content,
      [this.reasoningField]: reasoning === '' ? null : reasoning,
      tool_calls: toolCalls.map((call, i) => ({
        id: this.ids[i],
        type: 'function',
        function: { name: call.name, arguments: call.arguments },
      })),
    };
  }
}

/** Append `more` to `into`, one entry per tool call index. */
function merge(into: OutputDelta, more: OutputDelta): void {
  into.reasoning += more.reasoning;
  into.content += more.content;
  for (const call of more.toolCalls) {
    const same = into.toolCalls.find((c) => c.index === call.index);
    if (same === undefined) into.toolCalls.push({ ...call });
    else same.arguments += call.arguments;
  }
}
