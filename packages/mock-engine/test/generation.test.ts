import { describe, expect, it } from 'vitest';
import {
  continuationInput,
  encodePrompt,
  expectedGeneration,
  renderChatPrompt,
} from '../src/index.js';
import type { ChatMessage, GenerationInput } from '../src/index.js';
import {
  BYTE_WORDS,
  VOCABULARY_SIZE,
  createStreamDecoder,
  decode,
  encode,
  tokenize,
} from '../src/tokenizer.js';
import { prng, randomText } from './random-text.js';

const user = (content: string): ChatMessage => ({ role: 'user', content });
const chat = (...messages: ChatMessage[]): GenerationInput => ({ kind: 'chat', messages });
const completion = (prompt: string | number[]): GenerationInput => ({ kind: 'completion', prompt });
const utf8 = (text: string) => [...new TextEncoder().encode(text)];
/** Whether generated id `k` starts a character (it is not a UTF-8 continuation byte). */
const startsChar = (ids: number[], k: number) => (ids[k] ?? 0) < 0x80 || (ids[k] ?? 0) >= 0xc0;

const ALPHABET = [
  'a',
  'Z',
  ' ',
  '  ',
  '\n',
  '\t',
  'é',
  'ñ',
  '日',
  '本',
  '🙂',
  '\u00a0',
  'the',
  ' fox',
  '<|user|>',
  '!',
];
/** Chats of many prompts: a table broad enough to meet every case of the tokenizer. */
const manyChats = Array.from({ length: 60 }, (_, i) => chat(user(`question number ${i}`)));

describe('tokenize', () => {
  it.each([
    ['', []],
    ['hello', ['hello']],
    ['the quick fox', ['the', ' quick', ' fox']],
    [' lead', [' lead']],
    ['a  b', ['a', ' ', ' b']],
    ['a\nb', ['a', '\n', 'b']],
    ['a \nb', ['a', ' \n', 'b']],
    ['a\n b', ['a', '\n', ' b']],
    ['a\n\n  b', ['a', '\n\n ', ' b']],
    ['end ', ['end', ' ']],
    ['end\n', ['end', '\n']],
    ['<|user|>\nHi\n<|assistant|>\n', ['<|user|>', '\n', 'Hi', '\n', '<|assistant|>', '\n']],
  ])('%j → %j', (text, pieces) => {
    expect(tokenize(text)).toEqual(pieces);
    expect(tokenize(text).join('')).toBe(text);
  });
});

describe('renderChatPrompt (the chat template)', () => {
  const history = [
    { role: 'system', content: 'Be brief.' },
    user('Hi'),
    { role: 'assistant', content: 'Hello' },
  ];
  it.each([
    [[user('Hi')], {}, '<|user|>\nHi\n<|assistant|>\n'],
    [history, {}, '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n<|assistant|>\n'],
    [
      history,
      { addGenerationPrompt: false },
      '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n',
    ],
    [
      history,
      { continueFinalMessage: true, addGenerationPrompt: false },
      '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello',
    ],
    [[user('Hi')], { continueFinalMessage: true }, '<|user|>\nHi'],
  ])('%j with %j', (messages, options, text) => {
    expect(renderChatPrompt(messages, options)).toBe(text);
  });

  it('counts the template in the prompt ids: one id per role marker, bytes for other pieces', () => {
    // <|user|> \n H e l l o (space) t h e r e \n <|assistant|> \n
    expect(encodePrompt(chat(user('Hello there')))).toHaveLength(16);
    expect(encodePrompt(chat(user('the fox')))).toHaveLength(7);
    expect(encodePrompt({ kind: 'completion', prompt: [5, 300, 7] })).toEqual([5, 300, 7]);
  });
});

describe('encode and decode (byte-level)', () => {
  it('gives vocabulary pieces one id above the 256 byte ids and other pieces their bytes', () => {
    const [the, fox] = encode('the fox');
    expect(the).toBeGreaterThanOrEqual(256);
    expect(fox).toBeGreaterThanOrEqual(256);
    expect(encode(' fox')).toEqual([fox]);
    expect(encode('fox')).not.toEqual([fox]);
    expect(encode('<|assistant|>')).toHaveLength(1);
    expect(encode('other')).toEqual(utf8('other'));
    expect(encode('the café')).toEqual([the, ...utf8(' café')]);
    expect(encode('a\n\tz\u00a0')).toEqual([...encode('a'), 10, 9, 122, 0xc2, 0xa0]);
    expect(VOCABULARY_SIZE).toBeLessThan(2 ** 31);
    for (const id of encode('every piece 日本 🙂 <|user|>'))
      expect(id).toBeLessThan(VOCABULARY_SIZE);
  });

  it.each([
    '',
    'the quick fox',
    'naïve café über',
    '日本語 🙂🙂',
    ' lead  two\n\n\ttabs ',
    '<|user|>\nHi',
  ])('decode(encode(%j)) is the text', (text) => {
    expect(decode(encode(text))).toBe(text);
  });

  it('inverts encode on 500 random texts (P2)', () => {
    const next = prng(7);
    for (let i = 0; i < 500; i++) {
      const text = randomText(next, ALPHABET, Math.floor(next() * 30));
      expect(decode(encode(text)), JSON.stringify(text)).toBe(text);
    }
  });

  it.each([
    [[0xc3], '\uFFFD'],
    [[0x20, 0x63, 0xc3], ' c\uFFFD'],
    [[0xe6, 0x97], '\uFFFD'],
    [[0xe6, 0x97, 0xa5], '日'],
    [[0xa5, 0x41], '\uFFFDA'],
    [[0xf0, 0x9f, 0x99, 0x82], '🙂'],
  ])(
    'decodes an incomplete or invalid byte sequence %j to U+FFFD like errors="replace"',
    (ids, text) => {
      expect(decode(ids)).toBe(text);
    },
  );

  it('encodes every prefix of a byte-by-byte word as its bytes (no vocabulary word hides in one)', () => {
    for (const word of BYTE_WORDS) {
      for (const form of [word, ` ${word}`]) {
        const chars = [...form];
        for (let i = 1; i <= chars.length; i++) {
          const prefix = chars.slice(0, i).join('');
          expect(encode(prefix), prefix).toEqual(utf8(prefix));
        }
      }
    }
  });
});

describe('createStreamDecoder (vLLM incremental detokenization)', () => {
  it('releases a character only with its last byte, the whole character at once', () => {
    const step = createStreamDecoder([]);
    expect(utf8(' 日本').map(step)).toEqual([' ', '', '', '日', '', '', '本']);
  });

  it('includes the character bytes that ended the prompt', () => {
    const step = createStreamDecoder([...encode('the'), 0x20, 0xe6, 0x97]);
    expect(step(0xa5)).toBe('日');
    expect(step(encode(' fox')[0]!)).toBe(' fox');
  });
});

describe('expectedGeneration', () => {
  it('generates maxTokens tokens, finish_reason length, the same every time', () => {
    const a = expectedGeneration(chat(user('Hello there')), { maxTokens: 12 });
    expect(a.ids).toHaveLength(12);
    expect(a.deltas).toHaveLength(12);
    expect(a.chunkIds).toEqual(a.ids.map((id) => [id]));
    expect(a.text).toBe(a.deltas.join(''));
    expect(a).toMatchObject({
      finishReason: 'length',
      stopReason: null,
      promptTokens: 16,
      completionTokens: 12,
    });
    expect(a.promptIds).toEqual(encodePrompt(chat(user('Hello there'))));
    // A chat answer starts without a space (after `<|assistant|>\n`), like a model's.
    expect(a.text.startsWith(' ')).toBe(false);
    expect(expectedGeneration(chat(user('Hello there')), { maxTokens: 12 })).toEqual(a);
  });

  it('depends on every prompt token', () => {
    const words = Array.from({ length: 30 }, (_, i) => `w${i}`);
    const base = expectedGeneration(completion(words.join(' ')), { maxTokens: 16 }).text;
    for (const i of [0, 1, 15, 28, 29]) {
      const changed = words.with(i, 'changed').join(' ');
      expect(expectedGeneration(completion(changed), { maxTokens: 16 }).text, `word ${i}`).not.toBe(
        base,
      );
    }
  });

  it('usually writes a character of several tokens within 32 tokens (at least 90 of 100 prompts)', () => {
    const prompts = Array.from({ length: 100 }, (_, i) => chat(user(`prompt ${i}`)));
    const multi = prompts.filter((input) =>
      expectedGeneration(input, { maxTokens: 32 }).ids.some((id) => id >= 0x80 && id < 0x100),
    );
    expect(multi.length).toBeGreaterThanOrEqual(90);
  });

  it('streams "" for a token that leaves a character incomplete and the whole character with its last byte', () => {
    let checked = 0;
    for (const input of manyChats) {
      const { ids, deltas } = expectedGeneration(input, { maxTokens: 32 });
      const step = createStreamDecoder([]);
      ids.forEach((id, i) => {
        const bytes = [id];
        const alone = step(id);
        expect(deltas[i]).toBe(alone);
        if (id >= 0xc0 && id < 0x100) {
          // A lead byte: nothing until the character is complete, then all of it.
          expect(deltas[i]).toBe('');
          const length = id >= 0xf0 ? 4 : id >= 0xe0 ? 3 : 2;
          if (i + length <= ids.length) {
            for (let j = 1; j < length; j++) bytes.push(ids[i + j]!);
            expect(deltas.slice(i, i + length)).toEqual([
              ...Array<string>(length - 1).fill(''),
              decode(bytes),
            ]);
            checked++;
          }
        }
      });
    }
    expect(checked).toBeGreaterThan(20);
  });

  // P1: the next token is a function of all ids so far; continuing by ids is exact.
  it.each([
    ['a completion', completion('Once upon a time')],
    ['a completion ending in a space', completion('Once upon a ')],
    ['a completion ending in a newline', completion('Title\n')],
    ['a completion given as token ids', completion([3, 300, 7])],
    ['a chat', chat(user('Hello there'))],
    ['a multi-turn chat', chat(user('Hi'), { role: 'assistant', content: 'Hello' }, user('More'))],
  ])(
    'continuing %s from the prompt ids plus its first k generated ids yields the rest, for every k',
    (_, input) => {
      const n = 32;
      const full = expectedGeneration(input, { maxTokens: n });
      for (let k = 0; k <= n; k++) {
        const continued = continuationInput(input, full.ids.slice(0, k));
        const rest = expectedGeneration(continued, { maxTokens: n - k });
        expect(rest.ids, `k = ${k}`).toEqual(full.ids.slice(k));
      }
    },
  );

  it('continues exactly when the cut falls inside a character, and the continuation streams the whole character', () => {
    let inside = 0;
    for (const input of manyChats) {
      const full = expectedGeneration(input, { maxTokens: 32 });
      for (let k = 1; k < 32; k++) {
        if (startsChar(full.ids, k)) continue;
        inside++;
        const rest = expectedGeneration(continuationInput(input, full.ids.slice(0, k)), {
          maxTokens: 32 - k,
        });
        expect(rest.ids).toEqual(full.ids.slice(k));
        // What the client saw, then what the continuation streams: the whole answer.
        expect(full.deltas.slice(0, k).join('') + rest.text).toBe(full.text);
        // The token completing the cut character carries all of it, prompt bytes included.
        const done = rest.ids.findIndex((_, i) => startsChar(rest.ids, i + 1));
        if (done === -1 || done === rest.ids.length - 1) continue; // completed at the very end, or never
        expect(rest.deltas.slice(0, done)).toEqual(Array<string>(done).fill(''));
        const char = rest.deltas[done]!;
        expect([...char]).toHaveLength(1);
        expect(utf8(char)).toEqual(
          [...full.ids.slice(0, k), ...rest.ids.slice(0, done + 1)].slice(-utf8(char).length),
        );
        expect(utf8(char).length).toBeGreaterThan(done + 1);
      }
    }
    expect(inside).toBeGreaterThan(50);
  });

  // P3: prompt text + generated text tokenizes to prompt ids ++ generated ids at word boundaries.
  it.each([
    '',
    'hello',
    'hello ',
    'hello  ',
    'hello\n',
    'hello \n',
    'hello\n ',
    'tab\t',
    ' ',
    'the',
    'x c',
    'x\u00a0',
  ])(
    'encode(prompt %j + generated text) is the prompt ids then the generated ids at every word boundary',
    (prompt) => {
      const { ids } = expectedGeneration(completion(prompt), { maxTokens: 40 });
      let boundaries = 0;
      for (let k = 1; k < ids.length; k++) {
        // A word boundary: the next token starts a word (a vocabulary id or a space).
        const next = ids[k]!;
        if (next < 256 && next !== 0x20) continue;
        boundaries++;
        const head = ids.slice(0, k);
        expect(encode(prompt + decode(head)), `k = ${k}`).toEqual([...encode(prompt), ...head]);
      }
      expect(boundaries).toBeGreaterThan(5);
    },
  );

  it('round-trips a chat prompt and its answer the same way', () => {
    const input = chat({ role: 'system', content: 'Be brief.' }, user('Hello there'));
    const prompt = renderChatPrompt(input.kind === 'chat' ? input.messages : []);
    const { text, ids } = expectedGeneration(input, { maxTokens: 10 });
    expect(encode(prompt + text)).toEqual([...encodePrompt(input), ...ids]);
  });

  it('builds a continuation as a completion of the prompt ids followed by the generated ids', () => {
    expect(continuationInput(chat(user('Hi')), [300, 32, 0xc3])).toEqual({
      kind: 'completion',
      prompt: [...encodePrompt(chat(user('Hi'))), 300, 32, 0xc3],
    });
    expect(continuationInput(completion('Once'), [301])).toEqual(
      completion([...encode('Once'), 301]),
    );
  });
});

describe('stop strings, stop token ids and min_tokens (vLLM rules)', () => {
  const input = completion('stop here');
  const full = expectedGeneration(input, { maxTokens: 30 });
  const words = full.text.split(' ');

  it('cuts before the stop string, counts the token that completed it, and holds back while streaming', () => {
    // A stop string that ends in the middle of the 5th word's token.
    const fifth = full.deltas.findIndex(
      (_, i) =>
        full.deltas
          .slice(0, i + 1)
          .join('')
          .split(' ').length > 5,
    );
    const before = full.deltas.slice(0, fifth).join('');
    const stop = `${before.slice(-3)}${full.deltas[fifth]!.slice(0, 2)}`;
    const cut = expectedGeneration(input, { maxTokens: 30, stop: ['never-there', stop] });
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
    expect(cut).toMatchObject({
      finishReason: 'stop',
      stopReason: stop,
      completionTokens: fifth + 1,
    });
    expect(cut.ids).toEqual(full.ids.slice(0, fifth + 1));
    expect(cut.deltas.join('')).toBe(cut.text);
    // Held back: every chunk but the last lags the text by len(longest stop) - 1 characters.
    const hold = 'never-there'.length - 1;
    for (let i = 0; i < fifth; i++) {
      const shown = full.deltas.slice(0, i + 1).join('');
      expect(cut.deltas.slice(0, i + 1).join(''), `chunk ${i}`).toBe(
        [...shown].slice(0, Math.max(0, [...shown].length - hold)).join(''),
      );
    }
    expect(words.length).toBeGreaterThan(5);
  });

  it('flushes the held-back text with the last chunk when no stop string matched', () => {
    const held = expectedGeneration(input, { maxTokens: 30, stop: ['zzzzzz'] });
    expect(held.text).toBe(full.text);
    expect(held.finishReason).toBe('length');
    // 'zzzzzz' holds back 5 characters until the last chunk.
    const beforeLast = [...full.deltas.slice(0, -1).join('')];
    expect(held.deltas.slice(0, -1).join('')).toBe(beforeLast.slice(0, -5).join(''));
    expect(held.deltas.at(-1)!.length).toBeGreaterThan(full.deltas.at(-1)!.length);
    expect(held.deltas.join('')).toBe(full.text);
  });

  it('keeps the stop string with include_stop_str_in_output and holds nothing back', () => {
    const stop = words[3]!;
    const kept = expectedGeneration(input, {
      maxTokens: 30,
      stop: [stop],
      includeStopStrInOutput: true,
    });
    const at = full.text.indexOf(stop);
    expect(kept.text).toBe(full.text.slice(0, at + stop.length));
    expect(kept.stopReason).toBe(stop);
    expect(kept.deltas.slice(0, -1)).toEqual(full.deltas.slice(0, kept.deltas.length - 1));
  });

  it('ignores stop strings within min_tokens', () => {
    const stop = words[1]!;
    const early = expectedGeneration(input, { maxTokens: 30, stop: [stop] });
    expect(early.completionTokens).toBeLessThan(5);
    const later = expectedGeneration(input, { maxTokens: 30, stop: [stop], minTokens: 10 });
    expect(later.completionTokens).toBeGreaterThan(10);
    const again = later.text.length;
    expect(later.text).toBe(full.text.slice(0, again));
    if (later.finishReason === 'stop') expect(full.text.slice(again).startsWith(stop)).toBe(true);
  });

  it('stops on a stop token id (stop_reason = the id, its text left out) after min_tokens, length first', () => {
    const id = full.ids[6]!;
    const first = full.ids.indexOf(id);
    const stopped = expectedGeneration(input, { maxTokens: 30, stopTokenIds: [id] });
    expect(stopped).toMatchObject({
      finishReason: 'stop',
      stopReason: id,
      completionTokens: first + 1,
    });
    expect(stopped.ids).toEqual(full.ids.slice(0, first + 1));
    expect(stopped.text).toBe(full.deltas.slice(0, first).join(''));
    const withText = expectedGeneration(input, {
      maxTokens: 30,
      stopTokenIds: [id],
      includeStopStrInOutput: true,
    });
    expect(withText.text).toBe(full.deltas.slice(0, first + 1).join(''));
    const min = expectedGeneration(input, {
      maxTokens: 30,
      stopTokenIds: [id],
      minTokens: first + 2,
    });
    expect(min.completionTokens).toBeGreaterThan(first + 1);
    // The max_tokens-th token ends with "length" even when it is a stop id (vLLM checks length first).
    expect(expectedGeneration(input, { maxTokens: first + 1, stopTokenIds: [id] })).toMatchObject({
      finishReason: 'length',
      stopReason: null,
    });
  });
});

describe('logprobs', () => {
  it('are a pure function of the ids so far: the chosen id first, k distinct candidates, descending', () => {
    const input = chat(user('logprobs please'));
    const full = expectedGeneration(input, { maxTokens: 20, topLogprobs: 5 });
    expect(full.logprobs).toHaveLength(20);
    full.logprobs!.forEach((candidates, i) => {
      expect(candidates).toHaveLength(5);
      expect(candidates[0]!.id).toBe(full.ids[i]);
      expect(new Set(candidates.map((c) => c.id)).size).toBe(5);
      const values = candidates.map((c) => c.logprob);
      expect(values).toEqual([...values].sort((a, b) => b - a));
      expect(values[0]).toBeLessThan(0);
    });
    const rest = expectedGeneration(continuationInput(input, full.ids.slice(0, 7)), {
      maxTokens: 13,
      topLogprobs: 5,
    });
    expect(rest.logprobs).toEqual(full.logprobs!.slice(7));
    expect(expectedGeneration(input, { maxTokens: 20 }).logprobs).toBeUndefined();
  });
});

describe('scripts', () => {
  it('answers with the first matching script rule, one chunk per piece, cut at maxTokens', () => {
    const script = [
      { match: 'weather', response: 'It is sunny.' },
      { match: 'capital', response: 'Paris', finishReason: 'length' as const },
      { match: 'empty', response: '' },
    ];
    expect(expectedGeneration(chat(user('the weather?')), { maxTokens: 10, script })).toMatchObject(
      {
        text: 'It is sunny.',
        deltas: ['It', ' is', ' sunny.'],
        chunkIds: [encode('It'), encode(' is'), encode(' sunny.')],
        finishReason: 'stop',
        completionTokens: 3,
      },
    );
    expect(expectedGeneration(completion('a capital?'), { maxTokens: 10, script })).toMatchObject({
      text: 'Paris',
      finishReason: 'length',
    });
    expect(expectedGeneration(completion('weather'), { maxTokens: 2, script })).toMatchObject({
      text: 'It is',
      finishReason: 'length',
    });
    expect(expectedGeneration(completion('empty'), { maxTokens: 2, script })).toMatchObject({
      text: '',
      ids: [],
      finishReason: 'stop',
    });
    const unscripted = expectedGeneration(completion('other'), { maxTokens: 3, script });
    expect(unscripted).toEqual(expectedGeneration(completion('other'), { maxTokens: 3 }));
  });
});
