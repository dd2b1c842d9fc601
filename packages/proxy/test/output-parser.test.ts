import { describe, expect, it } from 'vitest';
import {
  accumulate,
  createOutputParser,
  remainder,
  type ChatOutputFormat,
  type OutputDelta,
  type ParsedOutput,
} from '../src/continuation/output-parser.js';

const HARMONY: ChatOutputFormat = { kind: 'harmony' };
const THINK: ChatOutputFormat = { kind: 'tagged', reasoning: true, tools: false };
const HERMES: ChatOutputFormat = { kind: 'tagged', reasoning: false, tools: true };
const BOTH: ChatOutputFormat = { kind: 'tagged', reasoning: true, tools: true };
const NEITHER: ChatOutputFormat = { kind: 'tagged', reasoning: false, tools: false };

type Call = { name: string; arguments: string };

function output(reasoning: string, content: string, toolCalls: Call[] = []): ParsedOutput {
  return { reasoning, content, toolCalls };
}

function empty(): ParsedOutput {
  return output('', '');
}

/** Tool call ids `id-0`, `id-1`, … */
function counter(prefix = 'id-'): () => string {
  let n = 0;
  return () => `${prefix}${n++}`;
}

/**
 * Checks the shape of a stream of deltas: one entry a call in a delta, in index order, a
 * call's first entry with its name and an id, the later ones with neither.
 */
class DeltaStream {
  readonly total = empty();
  private readonly seen = new Set<number>();

  add(delta: OutputDelta): void {
    const indexes = delta.toolCalls.map((call) => call.index);
    expect(indexes).toEqual([...new Set(indexes)].sort((a, b) => a - b));
    for (const call of delta.toolCalls) {
      if (this.seen.has(call.index)) {
        expect(call.name).toBeUndefined();
        expect(call.id).toBeUndefined();
      } else {
        expect(call.name).toBeTypeOf('string');
        expect(call.id).toBeTypeOf('string');
        this.seen.add(call.index);
      }
    }
    accumulate(this.total, delta);
  }

  /** Calls `received` already holds. */
  know(received: ParsedOutput): void {
    received.toolCalls.forEach((_, index) => this.seen.add(index));
    accumulate(this.total, {
      reasoning: received.reasoning,
      content: received.content,
      toolCalls: received.toolCalls.map((call, index) => ({ index, ...call })),
    });
  }
}

/** Parse `chunks` in order and finish; the accumulation, checked against `released`. */
function parse(format: ChatOutputFormat, chunks: Iterable<string>): ParsedOutput {
  const parser = createOutputParser(format, counter());
  const stream = new DeltaStream();
  for (const chunk of chunks) stream.add(parser.push(chunk));
  stream.add(parser.finish());
  expect(parser.released).toEqual(stream.total);
  return stream.total;
}

/** A seeded generator of numbers in [0, 1) (Park and Miller's minimal standard). */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 48271) % 2147483647;
    return state / 2147483647;
  };
}

function randomSplit(text: string, next: () => number): string[] {
  const chunks: string[] = [];
  let at = 0;
  while (at < text.length) {
    const size = 1 + Math.floor(next() * 12);
    chunks.push(text.slice(at, at + size));
    at += size;
  }
  return chunks;
}

/** The text as a streaming UTF-8 decoder gives it, fed one byte at a time. */
function* bytewise(text: string): Generator<string> {
  const decoder = new TextDecoder('utf-8');
  for (const byte of Buffer.from(text)) yield decoder.decode(Uint8Array.of(byte), { stream: true });
  yield decoder.decode();
}

interface Case {
  name: string;
  format: ChatOutputFormat;
  text: string;
  expected: ParsedOutput;
}

const CASES: Case[] = [
  {
    name: 'think: <think> at the start, whitespace kept on both sides',
    format: THINK,
    text: '<think>\nLet me think: café 日本 🙂.\n</think>\n\nThe answer is 42 🙂.',
    expected: output('\nLet me think: café 日本 🙂.\n', '\n\nThe answer is 42 🙂.'),
  },
  {
    name: 'think: no <think> (DeepSeek-R1 puts it in the prompt)',
    format: THINK,
    text: 'Okay, café.\n</think>\n\nAnswer: 日本.',
    expected: output('Okay, café.\n', '\n\nAnswer: 日本.'),
  },
  {
    name: 'think: no </think> yet: all reasoning',
    format: THINK,
    text: '<think>still thinking 日本 🙂',
    expected: output('still thinking 日本 🙂', ''),
  },
  {
    name: 'think: <think> not at the very start is text',
    format: THINK,
    text: ' <think>x</think>y',
    expected: output(' <think>x', 'y'),
  },
  {
    name: 'think: tags after the reasoning are content, a lone < is text',
    format: THINK,
    text: '<think>a < b <th</think>ok </think><think> <tool_call>',
    expected: output('a < b <th', 'ok </think><think> <tool_call>'),
  },
  {
    name: 'think: a partial marker at the end is text of its segment',
    format: THINK,
    text: '<think>hm</thin',
    expected: output('hm</thin', ''),
  },
  {
    name: 'think: nothing generated',
    format: THINK,
    text: '',
    expected: empty(),
  },
  {
    name: 'hermes: content then two calls, whitespace between and after dropped',
    format: HERMES,
    text:
      'Let me check 🙂.\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris café"}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "get_time", "arguments": {"zone": "日本", "n": {"a": [1, "}</tool_call>"]}}}\n</tool_call>\n',
    expected: output('', 'Let me check 🙂.\n\n', [
      { name: 'get_weather', arguments: '{"city": "Paris café"}' },
      { name: 'get_time', arguments: '{"zone": "日本", "n": {"a": [1, "}</tool_call>"]}}' },
    ]),
  },
  {
    name: 'hermes: other text after a call is content',
    format: HERMES,
    text: '<tool_call>{"name":"f","arguments":{}}</tool_call>\n\nDone 🙂 <tool_call>{"name":"g","arguments":[]}</tool_call>',
    expected: output('', 'Done 🙂 ', [
      { name: 'f', arguments: '{}' },
      { name: 'g', arguments: '[]' },
    ]),
  },
  {
    name: 'hermes: arguments before the name, escapes, other members skipped',
    format: HERMES,
    text: '<tool_call>{"arguments": {"q": "x\\"}y"}, "id": {"k": "}"}, "name": "caf\\u00e9"}</tool_call>',
    expected: output('', '', [{ name: 'café', arguments: '{"q": "x\\"}y"}' }]),
  },
  {
    name: 'hermes: a repeated name or arguments member is skipped',
    format: HERMES,
    text: '<tool_call>{"name": "f", "arguments": {}, "name": "g", "arguments": [1]}</tool_call>',
    expected: output('', '', [{ name: 'f', arguments: '{}' }]),
  },
  {
    name: 'hermes: scalar arguments',
    format: HERMES,
    text: '<tool_call>{"name": "n", "arguments": 12.5e3}</tool_call><tool_call>{"name": "s", "arguments": "日本"}</tool_call>',
    expected: output('', '', [
      { name: 'n', arguments: '12.5e3' },
      { name: 's', arguments: '"日本"' },
    ]),
  },
  {
    name: 'hermes: no name, no call; no arguments, empty arguments',
    format: HERMES,
    text: '<tool_call>{"arguments": {"a": 1}}</tool_call><tool_call>{"name": "bare"}</tool_call>',
    expected: output('', '', [{ name: 'bare', arguments: '' }]),
  },
  {
    name: 'hermes: not JSON is dropped up to </tool_call>',
    format: HERMES,
    text: 'a<tool_call>not json</tool_call>after<tool_call>{"name": "f"} x</tool_call>',
    expected: output('', 'aafter', [{ name: 'f', arguments: '' }]),
  },
  {
    name: 'hermes: a call cut short by </tool_call> keeps what it released',
    format: HERMES,
    text: '<tool_call>{"name": "f", "arguments": {"a": 1</tool_call> end',
    expected: output('', 'end', [{ name: 'f', arguments: '{"a": 1' }]),
  },
  {
    name: 'hermes: the generation ends inside the arguments',
    format: HERMES,
    text: '<tool_call>\n{"name": "f", "arguments": {"a": "b 🙂',
    expected: output('', '', [{ name: 'f', arguments: '{"a": "b 🙂' }]),
  },
  {
    name: 'hermes: text without calls, with < and tags, is content',
    format: HERMES,
    text: 'Just <b>html</b>, a < b, <think></think> and <tool',
    expected: output('', 'Just <b>html</b>, a < b, <think></think> and <tool'),
  },
  {
    name: 'hermes: a partial <tool_call> after a call is content',
    format: HERMES,
    text: '<tool_call>{"name":"f","arguments":{}}</tool_call>\n<tool_',
    expected: output('', '<tool_', [{ name: 'f', arguments: '{}' }]),
  },
  {
    name: 'think + hermes: reasoning, then content before the call',
    format: BOTH,
    text: '<think>\nNeed weather <tool_call>.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
    expected: output('\nNeed weather <tool_call>.\n', '\n\n', [
      { name: 'get_weather', arguments: '{"city": "Zürich"}' },
    ]),
  },
  {
    name: 'neither: all content',
    format: NEITHER,
    text: '<think>a</think>b<tool_call>{"name":"f","arguments":{}}</tool_call>',
    expected: output('', '<think>a</think>b<tool_call>{"name":"f","arguments":{}}</tool_call>'),
  },
  {
    name: 'harmony: analysis then final, the first message without <|start|>',
    format: HARMONY,
    text: '<|channel|>analysis<|message|>User says café 日本.<|end|><|start|>assistant<|channel|>final<|message|>Bonjour 🙂!<|return|>',
    expected: output('User says café 日本.', 'Bonjour 🙂!'),
  },
  {
    name: 'harmony: analysis then a tool call, recipient after the channel',
    format: HARMONY,
    text:
      '<|start|>assistant<|channel|>analysis<|message|>Need the weather 🙂.<|end|>' +
      '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    expected: output('Need the weather 🙂.', '', [
      { name: 'get_weather', arguments: '{"city":"Paris"}' },
    ]),
  },
  {
    name: 'harmony: recipient before the channel',
    format: HARMONY,
    text: '<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city":"東京"}<|call|>',
    expected: output('x', '', [{ name: 'get_weather', arguments: '{"city":"東京"}' }]),
  },
  {
    name: 'harmony: a commentary preamble is content; two calls',
    format: HARMONY,
    text:
      '<|channel|>commentary<|message|>Checking both.<|end|>' +
      '<|start|>assistant<|channel|>commentary to=functions.a <|constrain|>json<|message|>{}<|call|>' +
      '<|start|>assistant<|channel|>commentary to=functions.b json<|message|>{"x": "é"}<|call|>',
    expected: output('', 'Checking both.', [
      { name: 'a', arguments: '{}' },
      { name: 'b', arguments: '{"x": "é"}' },
    ]),
  },
  {
    name: 'harmony: an unknown channel is dropped, a built-in tool in analysis is reasoning',
    format: HARMONY,
    text:
      '<|channel|>other<|message|>gone<|end|><|start|>assistant<|channel|>analysis to=browser.search code<|message|>{"q":1}<|call|>' +
      '<|start|>assistant<|channel|>final<|message|>a <b> <|notamarker|> c<|end|>',
    expected: output('{"q":1}', 'a <b> <|notamarker|> c'),
  },
  {
    name: 'harmony: a partial marker at the end of a body is its text',
    format: HARMONY,
    text: '<|channel|>final<|message|>Hello <|retur',
    expected: output('', 'Hello <|retur'),
  },
  {
    name: 'harmony: a header cut short releases nothing',
    format: HARMONY,
    text: '<|channel|>final<|message|>Hi<|end|><|start|>assistant<|channel|>fin',
    expected: output('', 'Hi'),
  },
];

describe('createOutputParser', () => {
  it.each(CASES)('$name', ({ format, text, expected }) => {
    expect(parse(format, [text])).toEqual(expected);
  });

  it.each(CASES)('every chunking gives the same: $name', ({ format, text, expected }) => {
    for (let cut = 0; cut <= text.length; cut++) {
      expect(parse(format, [text.slice(0, cut), text.slice(cut)])).toEqual(expected);
    }
    expect(parse(format, text)).toEqual(expected); // one UTF-16 code unit at a time
    expect(parse(format, bytewise(text))).toEqual(expected);
    const next = random(7);
    for (let round = 0; round < 50; round++) {
      expect(parse(format, randomSplit(text, next))).toEqual(expected);
    }
  });

  it('releases a call name once whole, with its id, and arguments as they arrive', () => {
    const parser = createOutputParser(HERMES, counter('call-'));
    expect(parser.push('Hi <tool_call>\n{"name": "get_wea')).toEqual({
      reasoning: '',
      content: 'Hi ',
      toolCalls: [],
    });
    expect(parser.push('ther", "arguments": {"ci')).toEqual({
      reasoning: '',
      content: '',
      toolCalls: [{ index: 0, id: 'call-0', name: 'get_weather', arguments: '{"ci' }],
    });
    expect(parser.push('ty": "Paris"}}\n</tool_call>')).toEqual({
      reasoning: '',
      content: '',
      toolCalls: [{ index: 0, arguments: 'ty": "Paris"}' }],
    });
    expect(parser.finish()).toEqual({ reasoning: '', content: '', toolCalls: [] });
  });

  it('releases a harmony call name with its header', () => {
    const parser = createOutputParser(HARMONY, counter('call-'));
    expect(parser.push('<|channel|>commentary to=functions.f <|constrain|>json<|mess')).toEqual({
      reasoning: '',
      content: '',
      toolCalls: [],
    });
    expect(parser.push('age|>{"a"')).toEqual({
      reasoning: '',
      content: '',
      toolCalls: [{ index: 0, id: 'call-0', name: 'f', arguments: '{"a"' }],
    });
  });

  it('makes vLLM-shaped tool call ids by default', () => {
    const parser = createOutputParser(HERMES);
    const delta = parser.push('<tool_call>{"name": "f", "arguments": {}}</tool_call>');
    expect(delta.toolCalls[0]?.id).toMatch(/^chatcmpl-tool-[0-9a-f]{32}$/);
  });
});

describe('holding back', () => {
  it('holds a possible </think> and nothing more', () => {
    const parser = createOutputParser(THINK);
    expect(parser.push('<think>abc</thi')).toEqual({
      reasoning: 'abc',
      content: '',
      toolCalls: [],
    });
    expect(parser.push('nk>x')).toEqual({ reasoning: '', content: 'x', toolCalls: [] });
  });

  it('holds a possible <think> at the start, released as reasoning at the end', () => {
    const parser = createOutputParser(THINK);
    expect(parser.push('<thi')).toEqual({ reasoning: '', content: '', toolCalls: [] });
    expect(parser.finish()).toEqual({ reasoning: '<thi', content: '', toolCalls: [] });
  });

  it('holds a possible <tool_call>, and releases it when it is not one', () => {
    const parser = createOutputParser(HERMES);
    expect(parser.push('a <tool')).toEqual({ reasoning: '', content: 'a ', toolCalls: [] });
    expect(parser.push('_x')).toEqual({ reasoning: '', content: '<tool_x', toolCalls: [] });
    expect(parser.push('x < y <')).toEqual({ reasoning: '', content: 'x < y ', toolCalls: [] });
    expect(parser.finish()).toEqual({ reasoning: '', content: '<', toolCalls: [] });
  });

  it('holds a possible harmony marker in a body', () => {
    const parser = createOutputParser(HARMONY);
    expect(parser.push('<|channel|>final<|message|>Hi <|')).toEqual({
      reasoning: '',
      content: 'Hi ',
      toolCalls: [],
    });
    expect(parser.push('en')).toEqual({ reasoning: '', content: '', toolCalls: [] });
    expect(parser.push('d|>')).toEqual({ reasoning: '', content: '', toolCalls: [] });
    expect(parser.finish()).toEqual({ reasoning: '', content: '', toolCalls: [] });
    expect(parser.released).toEqual(output('', 'Hi '));
  });

  it('reads each character once: 300k single-character pushes take well under 5 s', () => {
    const text =
      '<think>' +
      'r'.repeat(100_000) +
      '</think>' +
      'c<'.repeat(50_000) +
      '<tool_call>{"name": "f", "arguments": {"a": "' +
      'x'.repeat(100_000) +
      '"}}</tool_call>';
    const parser = createOutputParser(BOTH);
    const started = performance.now();
    for (const char of text) parser.push(char);
    parser.finish();
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(parser.released.reasoning).toHaveLength(100_000);
    expect(parser.released.content).toHaveLength(100_000);
    expect(parser.released.toolCalls[0]?.arguments).toHaveLength(100_000 + 9);
  });
});

describe('remainder', () => {
  const call = (name: string, args: string): Call => ({ name, arguments: args });

  it.each([
    {
      name: 'inside reasoning',
      full: output('abcdef', 'x'),
      received: output('abc', ''),
      rest: { reasoning: 'def', content: 'x', toolCalls: [] },
    },
    {
      name: 'inside content',
      full: output('R', 'hello 🙂'),
      received: output('R', 'he'),
      rest: { reasoning: '', content: 'llo 🙂', toolCalls: [] },
    },
    {
      name: 'inside a call name (the call not yet received)',
      full: output('', 'c', [call('get_weather', '{"a":1}')]),
      received: output('', 'c'),
      rest: {
        reasoning: '',
        content: '',
        toolCalls: [{ index: 0, id: 'id-0', name: 'get_weather', arguments: '{"a":1}' }],
      },
    },
    {
      name: 'inside arguments',
      full: output('', '', [call('f', '{"a":1}')]),
      received: output('', '', [call('f', '{"a')]),
      rest: { reasoning: '', content: '', toolCalls: [{ index: 0, arguments: '":1}' }] },
    },
    {
      name: 'between calls',
      full: output('', '', [call('f', '{}'), call('g', '[1]')]),
      received: output('', '', [call('f', '{}')]),
      rest: {
        reasoning: '',
        content: '',
        toolCalls: [{ index: 1, id: 'id-0', name: 'g', arguments: '[1]' }],
      },
    },
    {
      name: 'everything received',
      full: output('r', 'c', [call('f', '{}')]),
      received: output('r', 'c', [call('f', '{}')]),
      rest: { reasoning: '', content: '', toolCalls: [] },
    },
  ])('$name', ({ full, received, rest }) => {
    expect(remainder(full, received, counter())).toEqual(rest);
  });

  it.each([
    { name: 'other reasoning', received: output('abd', '') },
    { name: 'other content', received: output('abc', 'y') },
    { name: 'a call name received in part', received: output('abc', 'x', [call('ge', '')]) },
    { name: 'another call name', received: output('abc', 'x', [call('got', '')]) },
    { name: 'other arguments', received: output('abc', 'x', [call('get', '{"b')]) },
    {
      name: 'more calls than full',
      received: output('abc', 'x', [call('get', '{}'), call('h', '')]),
    },
  ])('undefined for $name', ({ received }) => {
    const full = output('abcdef', 'xyz', [call('get', '{"a": 1}')]);
    expect(remainder(full, received)).toBeUndefined();
  });
});

describe('splicing a continuation (parse a prefix, remainder, push the rest)', () => {
  it.each(CASES)('$name', ({ format, text, expected }) => {
    for (let k = 0; k <= text.length; k++) {
      // The client received what the engine had released at the cut, or at an earlier point.
      for (const j of new Set([k, Math.max(0, k - 1), Math.floor(k / 2)])) {
        const engine = createOutputParser(format, counter('engine-'));
        engine.push(text.slice(0, j));
        const received = structuredClone(engine.released);
        const parser = createOutputParser(format, counter('mine-'));
        parser.push(text.slice(0, k));
        const rest = remainder(parser.released, received, counter('new-'));
        expect(rest, `cut at ${k}, received up to ${j}`).toBeDefined();
        const stream = new DeltaStream();
        stream.know(received);
        stream.add(rest!);
        // The continuation's text, in two chunks.
        const half = k + Math.floor((text.length - k) / 2);
        stream.add(parser.push(text.slice(k, half)));
        stream.add(parser.push(text.slice(half)));
        stream.add(parser.finish());
        expect(stream.total, `cut at ${k}, received up to ${j}`).toEqual(expected);
      }
    }
  });
});
