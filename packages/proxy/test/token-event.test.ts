import { describe, expect, it } from 'vitest';
import { withoutIds } from '../src/continuation/stitch.js';
import { readTokenEvent, type TokenEvent } from '../src/continuation/token-event.js';

type Json = Record<string, unknown>;

// vLLM's chunks as its OpenAI server writes them (pydantic, compact), and the mock engine's.
const chat = (choice: Json, more: Json = {}) =>
  JSON.stringify({
    id: 'chatcmpl-7f3a',
    object: 'chat.completion.chunk',
    created: 1733145600,
    model: 'openai/gpt-oss-20b',
    choices: [{ index: 0, ...choice }],
    ...more,
  });
const completion = (choice: Json, more: Json = {}) =>
  JSON.stringify({
    id: 'cmpl-9b1c',
    object: 'text_completion',
    created: 1733145600,
    model: 'm',
    choices: [{ index: 0, ...choice }],
    ...more,
  });
const token = { logprobs: null, finish_reason: null, token_ids: [1234] };

/**
 * What a token chunk means, from `JSON.parse`: the reference the one-pass reader must agree
 * with whenever it takes an event; undefined for the events it must leave to `JSON.parse`.
 */
function reference(
  json: string,
  isChat: boolean,
): Omit<TokenEvent, 'idsStart' | 'idsEnd'> | undefined {
  let event: Json;
  try {
    event = JSON.parse(json) as Json;
  } catch {
    return undefined;
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return undefined;
  if ('error' in event || (event.usage ?? null) !== null) return undefined;
  if ((event.prompt_token_ids ?? null) !== null) return undefined;
  const choices = event.choices;
  if (!Array.isArray(choices) || choices.length !== 1) return undefined;
  const choice = choices[0] as Json;
  if (typeof choice !== 'object' || choice === null || Array.isArray(choice)) return undefined;
  for (const key of ['finish_reason', 'logprobs', 'prompt_token_ids', 'stop_reason']) {
    if ((choice[key] ?? null) !== null) return undefined;
  }
  const ids = choice.token_ids ?? null;
  if (
    ids !== null &&
    !(Array.isArray(ids) && ids.every((id) => Number.isSafeInteger(id) && id >= 0))
  ) {
    return undefined;
  }
  if (isChat) {
    if ('text' in choice) return undefined;
    const delta = (choice.delta ?? {}) as Json;
    const fields = Object.entries(delta).filter(([, v]) => v !== null);
    if (
      Object.keys(delta).some((k) => !['content', 'reasoning', 'reasoning_content'].includes(k))
    ) {
      return undefined;
    }
    if (fields.length > 1 || fields.some(([, v]) => typeof v !== 'string')) return undefined;
    const [field, text] = (fields[0] ?? ['text', undefined]) as [
      TokenEvent['field'],
      string | undefined,
    ];
    return { ids: (ids ?? []) as number[], text, field };
  }
  if ('delta' in choice || (choice.text !== undefined && typeof choice.text !== 'string')) {
    return undefined;
  }
  return { ids: (ids ?? []) as number[], text: choice.text as string | undefined, field: 'text' };
}

describe('readTokenEvent: the common token chunk without JSON.parse', () => {
  it("reads vLLM's chat and completions token chunks", () => {
    const c = chat({ delta: { content: ' token' }, ...token });
    const read = readTokenEvent(c, true)!;
    expect(read).toMatchObject({ ids: [1234], text: ' token', field: 'content' });
    expect(`${c.slice(0, read.idsStart)}null${c.slice(read.idsEnd)}`).toBe(withoutIds(c));

    const r = chat({ delta: { reasoning_content: 'Let me think' }, ...token });
    expect(readTokenEvent(r, true)).toMatchObject({
      text: 'Let me think',
      field: 'reasoning_content',
    });

    const t = completion(
      {
        text: 'é\n"q"',
        logprobs: null,
        finish_reason: null,
        stop_reason: null,
        prompt_token_ids: null,
        token_ids: [3, 40, 500],
      },
      { usage: null },
    );
    expect(readTokenEvent(t, false)).toMatchObject({
      ids: [3, 40, 500],
      text: 'é\n"q"',
      field: 'text',
    });
    // Without ids asked for, and an empty delta.
    expect(readTokenEvent(chat({ delta: {}, logprobs: null, finish_reason: null }), true)).toEqual({
      ids: [],
      text: undefined,
      field: 'text',
      idsStart: -1,
      idsEnd: -1,
    });
  });

  it('leaves every other event to JSON.parse', () => {
    const others = [
      chat({ delta: { role: 'assistant', content: '' }, ...token }, { prompt_token_ids: [1, 2] }),
      chat({ delta: { content: 'x' }, ...token, finish_reason: 'stop', stop_reason: null }),
      chat({ delta: { content: 'x' }, ...token, logprobs: { content: [] } }),
      chat({ delta: { tool_calls: [{ index: 0, function: { arguments: '{' } }] }, ...token }),
      chat({ delta: { content: 'x', reasoning: 'y' }, ...token }),
      JSON.stringify({ id: 'x', choices: [], usage: { prompt_tokens: 1 } }),
      JSON.stringify({ error: { message: 'boom' } }),
      JSON.stringify({
        choices: [
          { index: 0, delta: { content: 'a' } },
          { index: 1, delta: { content: 'b' } },
        ],
      }),
      chat({ delta: { content: 'x' }, ...token }, { extra: { token_ids: [5] } }),
      completion({ text: 'x', ...token }, { usage: { total_tokens: 3 } }),
      chat({ delta: { content: 'x' }, ...token, token_ids: [1.5] }),
      chat({ delta: { content: 'x' }, ...token, token_ids: [-1] }),
      chat({ delta: { content: 'x' }, ...token }).replace('"content"', '"cont\\u0065nt"'),
      '{"choices":[{"delta":{"content":"a"},"token_ids":[01]}]}',
      '{"choices":[{"delta":{"content":"a\tb"}}]}',
      '{"choices":[{"delta":{"content":"a"}}]} x',
      '[]',
      '',
    ];
    for (const json of others) expect(readTokenEvent(json, true), json).toBeUndefined();
    expect(readTokenEvent(chat({ delta: { content: 'x' }, ...token }), false)).toBeUndefined();
    expect(readTokenEvent(completion({ text: 'x', ...token }), true)).toBeUndefined();
  });

  it('agrees with JSON.parse on every event it takes, under any one-character damage', () => {
    const seeds: [string, boolean][] = [
      [chat({ delta: { content: ' to\\ken "q" \u00e9\ud83d\ude00' }, ...token }), true],
      [
        chat({ delta: { reasoning: 'a', content: null }, ...token, token_ids: [0, 17, 99999] }),
        true,
      ],
      [
        completion(
          { text: 'x y', logprobs: null, finish_reason: null, stop_reason: null, token_ids: [7] },
          { usage: null },
        ),
        false,
      ],
      [
        ' {"choices" : [ {"index":0 , "delta" : {"content" : "a"} , "token_ids" : [ 1 , 2 ] } ] , "created":-1.5e+3, "x":[true,false,null,{}] } ',
        true,
      ],
    ];
    const alphabet = [
      '"',
      '\\',
      '{',
      '}',
      '[',
      ']',
      ',',
      ':',
      '0',
      '1',
      '-',
      '.',
      'e',
      ' ',
      'n',
      '\n',
      'a',
    ];
    let taken = 0;
    let checked = 0;
    const check = (json: string, isChat: boolean) => {
      checked++;
      const read = readTokenEvent(json, isChat);
      if (read === undefined) return;
      taken++;
      const expected = reference(json, isChat);
      expect(expected, json).toBeDefined();
      expect({ ids: read.ids, text: read.text, field: read.field }, json).toEqual(expected);
      if (read.idsStart >= 0) {
        expect(`${json.slice(0, read.idsStart)}null${json.slice(read.idsEnd)}`, json).toBe(
          withoutIds(json),
        );
      } else expect(withoutIds(json), json).toBe(json);
    };
    for (const [seed, isChat] of seeds) {
      check(seed, isChat);
      for (let i = 0; i <= seed.length; i++) {
        check(seed.slice(0, i) + seed.slice(i + 1), isChat);
        for (const c of alphabet) {
          check(seed.slice(0, i) + c + seed.slice(i), isChat);
          check(seed.slice(0, i) + c + seed.slice(i + 1), isChat);
        }
      }
    }
    // The damage left many events readable: the agreement was tested, not vacuous.
    expect(taken).toBeGreaterThan(checked / 20);
  });
});
