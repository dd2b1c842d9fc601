import { describe, expect, it } from 'vitest';
import { ProxyError } from '../src/errors.js';
import { jsonSyntaxError } from '../src/json-scan.js';
import { RawJson } from '../src/raw-json.js';
import { LARGE_BODY_BYTES, parseRequest, promptPrefix } from '../src/request-body.js';

/** What JSON.parse says of `text`: accepted or not. */
function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const SAMPLES = [
  '{}',
  '[]',
  '{"a":1}',
  ' {\n "a" : [ 1 , 2.5e-3 , -0 , 0.0 , 1E+9 ] , "b" : { } }\t',
  '"x"',
  '0',
  '-1.25',
  'true',
  'false',
  'null',
  '{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00"}',
  '{"é":"ünïcödé 😀"}',
  '[[[[[]]]],{"a":[{}]}]',
  // Not JSON:
  '',
  ' ',
  '{',
  '}',
  '{"a"}',
  '{"a":}',
  '{"a":1,}',
  '[1,]',
  '[,1]',
  '{a:1}',
  "{'a':1}",
  '{"a":01}',
  '{"a":1.}',
  '{"a":.5}',
  '{"a":+1}',
  '{"a":1e}',
  '{"a":-}',
  '{"a":tru}',
  '{"a":nul}',
  '{"a":truex}',
  '{"a":"\\x"}',
  '{"a":"\\u12G4"}',
  '{"a":"tab\there"}',
  '{"a":"line\nbreak"}',
  '{"a":"unterminated}',
  '{"a":1}}',
  '{"a":1} x',
  '{"a":1}{"b":2}',
  '[1 2]',
  '{"a" 1}',
  '{"a":[}',
  '{"a":{]}',
  'NaN',
  '[Infinity]',
];

/** A seeded generator (mulberry32): the same mutations every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('jsonSyntaxError: the bytes checked in place, as JSON.parse would', () => {
  it.each(SAMPLES)('%j', (text) => {
    const fault = jsonSyntaxError(Buffer.from(text));
    expect(fault === undefined, JSON.stringify(fault)).toBe(parses(text));
  });

  it('agrees with JSON.parse on 3,000 random mutations of valid bodies', () => {
    const next = random(15);
    const alphabet = '{}[]",:\\ -+.0123456789eEtrufalsn\tx\u0001é';
    const bases = SAMPLES.filter(parses).concat(
      JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'a "b" \\ c\n' }], n: 1.5 }),
    );
    let disagreements = 0;
    const seen: string[] = [];
    for (let k = 0; k < 3000; k++) {
      const chars = [...bases[Math.floor(next() * bases.length)]!];
      const edits = 1 + Math.floor(next() * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(next() * (chars.length + 1));
        const op = next();
        const char = alphabet[Math.floor(next() * alphabet.length)]!;
        if (op < 0.4) chars.splice(at, 1);
        else if (op < 0.7) chars.splice(at, 0, char);
        else chars.splice(at, 1, char);
      }
      const text = chars.join('');
      if ((jsonSyntaxError(Buffer.from(text)) === undefined) !== parses(text)) {
        disagreements++;
        seen.push(text);
      }
    }
    expect(seen.slice(0, 5)).toEqual([]);
    expect(disagreements).toBe(0);
  });

  it('takes any depth of nesting and names the position of the fault', () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    expect(jsonSyntaxError(Buffer.from(deep))).toBeUndefined();
    expect(jsonSyntaxError(Buffer.from('{"a":[1,2,}'))).toEqual({
      at: 10,
      message: "Unexpected '}' at position 10",
    });
    expect(jsonSyntaxError(Buffer.from('{"a":'))?.message).toBe(
      'Unexpected end of JSON input at position 5',
    );
  });
});

/** A chat body over the large threshold: its one message `content` long. */
function chatBody(content: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    model: 'm',
    stream: true,
    user: 'u1',
    temperature: 0,
    ...extra,
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content },
    ],
  });
}

const LONG_TEXT = 'é "quoted" \\ back\nline 😀 '.repeat(Math.ceil((LARGE_BODY_BYTES * 2) / 30));

describe('parseRequest of a body over LARGE_BODY_BYTES', () => {
  it('reads the same model, stream, user and small members as JSON.parse, the prompt kept as bytes', () => {
    const text = chatBody(LONG_TEXT, { stop: ['x'], logit_bias: { 5: 1 } });
    const raw = Buffer.from(text);
    expect(raw.length).toBeGreaterThan(LARGE_BODY_BYTES);
    const parsed = parseRequest(raw);
    const reference = JSON.parse(text) as Record<string, unknown>;
    expect(parsed.model).toBe('m');
    expect(parsed.stream).toBe(true);
    expect(parsed.user).toBe('u1');
    const { messages, ...rest } = parsed.body;
    const { messages: _m, ...referenceRest } = reference;
    expect(rest).toEqual(referenceRest);
    expect(messages).toBeInstanceOf(RawJson);
    // The message with the long text stays raw, the short one is parsed.
    const items = [...(messages as RawJson).items()];
    expect(items[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(items[1]).toBeInstanceOf(RawJson);
    expect((items[1] as RawJson).member('role')).toBe('user');
  });

  it('keeps a member named __proto__ as an own field, as JSON.parse does', () => {
    const text = `{"__proto__":{"polluted":true},"model":"m","prompt":"${'x'.repeat(LARGE_BODY_BYTES)}"}`;
    const parsed = parseRequest(Buffer.from(text));
    expect(Object.hasOwn(parsed.body, '__proto__')).toBe(true);
    expect((parsed.body as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it.each([
    ['cut short', (text: string) => text.slice(0, -3), 'invalid_json'],
    [
      'a control character in the prompt',
      (text: string) => text.replace('back\\n', 'back\n'),
      'invalid_json',
    ],
    ['an array', (text: string) => `[${text}]`, 'invalid_request_body'],
    ['no model', (text: string) => text.replace('"model":"m"', '"model":""'), 'missing_model'],
    [
      'a model that is not a string',
      (text: string) => text.replace('"model":"m"', '"model":7'),
      'invalid_request_body',
    ],
  ])('refuses a body with %s, as a small one is', (_name, spoil, code) => {
    const text = spoil(chatBody(LONG_TEXT));
    expect(Buffer.byteLength(text)).toBeGreaterThan(LARGE_BODY_BYTES);
    let error: unknown;
    try {
      parseRequest(Buffer.from(text));
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ProxyError);
    expect((error as ProxyError).code).toBe(code);
    expect((error as ProxyError).status).toBe(400);
  });
});

describe('promptPrefix of a large body is the key its parsed body gives', () => {
  const prompts: [string, string][] = [
    ['chat messages', chatBody(LONG_TEXT)],
    [
      'chat content parts',
      JSON.stringify({
        model: 'm',
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'part one ' },
              { type: 'text', text: LONG_TEXT },
            ],
          },
        ],
      }),
    ],
    ['a completion prompt string', JSON.stringify({ model: 'm', prompt: LONG_TEXT })],
    ['a list of one prompt', JSON.stringify({ model: 'm', prompt: [LONG_TEXT] })],
    [
      'a token-id prompt',
      JSON.stringify({ model: 'm', prompt: Array.from({ length: 300_000 }, (_, i) => i % 50_000) }),
    ],
    ['an embedding input', JSON.stringify({ model: 'm', input: [LONG_TEXT, 'b'] })],
  ];
  it.each(prompts)('%s', (_name, text) => {
    expect(Buffer.byteLength(text)).toBeGreaterThan(LARGE_BODY_BYTES);
    const large = parseRequest(Buffer.from(text)).body;
    const small = JSON.parse(text) as Record<string, unknown>;
    for (const chars of [1, 7, 100, 512, 5000]) {
      expect(promptPrefix(large, chars), `${chars} characters`).toBe(promptPrefix(small, chars));
    }
  });
});

describe('RawJson.isSinglePrompt: what the completions endpoint takes as one prompt', () => {
  // Past RAW_VALUE_BYTES, so that a large body keeps it raw.
  const big = 'y'.repeat(70 * 1024);
  it.each([
    ['a string', JSON.stringify(big), true],
    ['a list of one string', JSON.stringify([big]), true],
    ['a list of two strings', JSON.stringify([big, 'z']), false],
    ['token ids', JSON.stringify(Array.from({ length: 20_000 }, (_, i) => i)), true],
    ['token ids with spaces and a minus', `[ 1, -2,\n3 ${', 4'.repeat(30_000)}]`, true],
    ['token ids written as 1.0 and 1e3', `[1.0, 1e3${', 4'.repeat(30_000)}]`, true],
    ['a fraction among token ids', `[1.5${', 4'.repeat(30_000)}]`, false],
    ['token ids and a string', `[1${', 4'.repeat(30_000)}, "a"]`, false],
    ['lists of token ids', `[[1${', 4'.repeat(30_000)}], [2]]`, false],
    ['an object', JSON.stringify({ a: big }), false],
  ])('%s', (_name, text, single) => {
    const raw = Buffer.from(text);
    expect(jsonSyntaxError(raw)).toBeUndefined();
    expect(new RawJson(raw, 0, raw.length).isSinglePrompt()).toBe(single);
  });
});
