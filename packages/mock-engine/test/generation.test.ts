import { describe, expect, it } from 'vitest';
import {
  continuationInput,
  encodePrompt,
  expectedGeneration,
  renderChatPrompt,
} from '../src/index.js';
import type { ChatMessage, GenerationInput } from '../src/index.js';
import { VOCABULARY_SIZE, encode, pieceId, tokenize } from '../src/tokenizer.js';

const user = (content: string): ChatMessage => ({ role: 'user', content });
const chat = (...messages: ChatMessage[]): GenerationInput => ({ kind: 'chat', messages });
const completion = (prompt: string): GenerationInput => ({ kind: 'completion', prompt });

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

  it('gives vocabulary words their vocabulary ids and other pieces stable ids above', () => {
    const [the, fox, other, newline] = encode('the fox other\n');
    expect(the).toBeLessThan(VOCABULARY_SIZE);
    expect(fox).toBeLessThan(VOCABULARY_SIZE);
    expect(the).not.toBe(pieceId(' the'));
    expect(other).toBeGreaterThanOrEqual(VOCABULARY_SIZE);
    expect(other).toBe(pieceId(' other'));
    expect(newline).toBe(pieceId('\n'));
    expect(Math.max(...encode('a \n\t z\u00a0'))).toBeLessThan(2 ** 31);
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

  it('counts the template in the prompt ids', () => {
    expect(encodePrompt(chat(user('Hello there')))).toHaveLength(7);
    expect(encodePrompt({ kind: 'completion', prompt: [5, 900, 7] })).toEqual([5, 900, 7]);
  });
});

describe('expectedGeneration', () => {
  it('generates maxTokens vocabulary tokens, finish_reason length, the same every time', () => {
    const a = expectedGeneration(chat(user('Hello there')), { maxTokens: 12 });
    expect(a.tokens).toHaveLength(12);
    expect(a.text).toBe(a.tokens.join(''));
    // A chat answer starts without a space (after `<|assistant|>\n`), like a model's.
    expect(a.text.split(' ')).toHaveLength(12);
    expect(a).toMatchObject({ finishReason: 'length', stopReason: null, promptTokens: 7 });
    for (const token of a.tokens) expect(pieceId(token)).toBeLessThan(VOCABULARY_SIZE);
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

  // The boundary rule: generated text starts bare after nothing or a line break, with a
  // space otherwise; then the prompt's tokens never merge with the generated ones.
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
  ])(
    'tokenizing prompt %j + generated text gives the prompt ids, then the generated ids',
    (prompt) => {
      const { text, tokens } = expectedGeneration(completion(prompt), { maxTokens: 10 });
      expect(tokenize(prompt + text)).toEqual([...tokenize(prompt), ...tokens]);
      expect(encode(prompt + text)).toEqual([...encode(prompt), ...tokens.map(pieceId)]);
    },
  );

  it('round-trips a chat prompt and its answer the same way', () => {
    const input = chat({ role: 'system', content: 'Be brief.' }, user('Hello there'));
    const prompt = renderChatPrompt(input.kind === 'chat' ? input.messages : []);
    const { text, tokens } = expectedGeneration(input, { maxTokens: 10 });
    expect(encode(prompt + text)).toEqual([...encodePrompt(input), ...tokens.map(pieceId)]);
  });

  it.each([
    ['a completion', completion('Once upon a time')],
    ['a completion ending in a newline', completion('Title\n')],
    ['a completion given as token ids', { kind: 'completion', prompt: [3, 9000, 7] } as const],
    ['a chat', chat(user('Hello there'))],
    ['a multi-turn chat', chat(user('Hi'), { role: 'assistant', content: 'Hello' }, user('More'))],
  ])(
    'continuing %s from the prompt plus its first k tokens yields the remaining tokens',
    (_, input) => {
      const n = 12;
      const full = expectedGeneration(input, { maxTokens: n }).tokens;
      for (let k = 0; k <= n; k++) {
        const continued = continuationInput(input, full.slice(0, k).join(''));
        expect(expectedGeneration(continued, { maxTokens: n - k }).tokens, `k = ${k}`).toEqual(
          full.slice(k),
        );
        // A continuation continued again: the same rest.
        const again = continuationInput(continued, full.slice(k, k + 2).join(''));
        expect(expectedGeneration(again, { maxTokens: n - k - 2 }).tokens).toEqual(
          full.slice(k + 2),
        );
      }
    },
  );

  it('builds a continuation input the way vLLM takes it', () => {
    expect(continuationInput(chat(user('Hi')), 'the fox')).toEqual({
      kind: 'chat',
      messages: [user('Hi'), { role: 'assistant', content: 'the fox' }],
      continueFinalMessage: true,
      addGenerationPrompt: false,
    });
    expect(continuationInput(completion('Once'), ' upon')).toEqual(completion('Once upon'));
  });

  it('cuts before the first stop string, mid-token if need be, with finish_reason stop', () => {
    const full = expectedGeneration(completion('p'), { maxTokens: 10 });
    const stop = full.tokens[4]?.slice(2) ?? '';
    const cut = expectedGeneration(completion('p'), { maxTokens: 10, stop: ['zzz', stop] });
    expect(full.text.startsWith(cut.text)).toBe(true);
    expect(full.text.indexOf(stop)).toBe(cut.text.length);
    expect(cut).toMatchObject({ finishReason: 'stop', stopReason: stop });
    expect(cut.tokens).toHaveLength(5);
  });

  it('answers with the first matching script rule, cut at maxTokens', () => {
    const script = [
      { match: 'weather', response: 'It is sunny.' },
      { match: 'capital', response: 'Paris', finishReason: 'length' as const },
    ];
    expect(expectedGeneration(chat(user('the weather?')), { maxTokens: 10, script })).toMatchObject(
      { text: 'It is sunny.', tokens: ['It', ' is', ' sunny.'], finishReason: 'stop' },
    );
    expect(expectedGeneration(completion('a capital?'), { maxTokens: 10, script })).toMatchObject({
      text: 'Paris',
      finishReason: 'length',
    });
    expect(expectedGeneration(completion('weather'), { maxTokens: 2, script })).toMatchObject({
      text: 'It is',
      finishReason: 'length',
    });
    const unscripted = expectedGeneration(completion('other'), { maxTokens: 3, script });
    expect(unscripted).toEqual(expectedGeneration(completion('other'), { maxTokens: 3 }));
  });
});
