/**
 * Byte-pair merges (`merges`): encoding text applies them, generation does not, so a
 * generation's text re-encodes to fewer ids than were generated. A continuation from text
 * (`continue_final_message`, prompt + text) therefore sees other ids; a structured answer
 * still continues by its text; a continuation from ids stays exact at every k.
 */
import { describe, expect, it } from 'vitest';
import {
  VOCABULARY_SIZE,
  continuationInput,
  decode,
  encode,
  encodePrompt,
  expectedChatOutput,
  expectedGeneration,
  vocabularySize,
} from '../src/index.js';
import type { GenerationInput, OutputFormat } from '../src/index.js';
import { MERGE_RULES, countTokens, isTokenId, tokenBytes } from '../src/tokenizer.js';
import { prng, randomText } from './random-text.js';
import { start } from './start.js';

type Json = Record<string, unknown>;

const merges = { merges: true } as const;

async function post(url: string, body: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

/** Each id's text, as `token_strs` shows it. */
const pieces = (ids: readonly number[]) => ids.map((id) => decode([id]));

// What the rules take, and what stops them.
const ALPHABET = [
  'c',
  'a',
  'f',
  'ca',
  'é',
  ' café',
  'café',
  'ï',
  'ü',
  'ñ',
  '日',
  '本',
  '🙂',
  'the',
  ' the',
  ' quick',
  ' over',
  ' lazy',
  ' dog',
  ' come',
  ' and',
  ' go',
  ' elastic',
  ' nodes',
  ' ',
  '\n',
  'x',
  '<|user|>',
];

/** BPE as it is usually written: merge the best-ranked adjacent pair (leftmost) until none. */
function referenceBpe(ids: readonly number[]): number[] {
  const out = [...ids];
  for (;;) {
    let best = -1;
    let at = -1;
    for (let i = 0; i + 1 < out.length; i++) {
      const rank = MERGE_RULES.findIndex(([l, r]) => l === out[i] && r === out[i + 1]);
      if (rank !== -1 && (best === -1 || rank < best)) [best, at] = [rank, i];
    }
    if (best === -1) return out;
    out.splice(at, 2, MERGE_RULES[best]![2]);
  }
}

// The proxy's text-path example: a chat whose prompt no rule touches, so the generation is
// the one without merges, and whose text merges (ü, ñ).
const PROMPT = 'Write about elastic clusters';
type ChatInput = GenerationInput & { kind: 'chat' };
const chat: ChatInput = { kind: 'chat', messages: [{ role: 'user', content: PROMPT }] };
const TEXT = 'over über while quick go while elastic clients señor cluster tokens over go';

describe('the merges (tokenizer)', () => {
  it('are ids after every other id, valid only with merges', () => {
    expect(vocabularySize()).toBe(VOCABULARY_SIZE);
    expect(vocabularySize(merges)).toBe(VOCABULARY_SIZE + MERGE_RULES.length);
    expect(MERGE_RULES.map(([, , id]) => id)).toEqual(
      MERGE_RULES.map((_, i) => VOCABULARY_SIZE + i),
    );
    expect(isTokenId(VOCABULARY_SIZE)).toBe(false);
    expect(isTokenId(VOCABULARY_SIZE, merges)).toBe(true);
    expect(isTokenId(vocabularySize(merges), merges)).toBe(false);
    // Each merged token is its operands' bytes, and no piece or other merged token has them.
    const distinct = new Set<string>();
    for (let id = 256; id < vocabularySize(merges); id++) distinct.add(tokenBytes(id).join(','));
    expect(distinct.size).toBe(vocabularySize(merges) - 256);
    for (const [l, r, id] of MERGE_RULES)
      expect([...tokenBytes(id)]).toEqual([...tokenBytes(l), ...tokenBytes(r)]);
    // Without merges, encode is as before.
    expect(encode('the café')).toHaveLength(7);
  });

  it.each([
    ['the café', ['the', ' café']],
    [' café naïve', [' café', ' ', 'n', 'a', 'ï', 'v', 'e']],
    ['cat', ['ca', 't']],
    // " the"+" quick" ranks before " over"+" the": BPE takes the best pair first.
    [' over the quick lazy dog', [' over', ' the quick', ' lazy dog']],
    [' over the fox', [' over the', ' fox']],
    [' come and go', [' come and go']],
    ['<|assistant|>\nthe quick', ['<|assistant|>', '\n', 'the quick']],
    ['x über', ['x', ' ', 'ü', 'b', 'e', 'r']],
  ])('encode(%j) merges into %j', (text, expected) => {
    const ids = encode(text, merges);
    expect(pieces(ids)).toEqual(expected);
    expect(decode(ids)).toBe(text);
  });

  it('has a token that ends inside a character (the first two bytes of 日)', () => {
    const [ri, ...hon] = encode('日本', merges);
    expect(decode([ri!])).toBe('日');
    expect(hon).toEqual([...new TextEncoder().encode('本')]);
    const [head] = MERGE_RULES.find(([, , id]) => id === ri)!;
    expect([...tokenBytes(head)]).toEqual([0xe6, 0x97]);
    expect(decode([head])).toBe('\uFFFD');
    expect(decode([head, 0xa5])).toBe('日');
  });

  it('is BPE, counted as encoded and inverted by decode, on 500 random texts', () => {
    const next = prng(19);
    let merged = 0;
    for (let i = 0; i < 500; i++) {
      const text = randomText(next, ALPHABET, Math.floor(next() * 30));
      const ids = encode(text, merges);
      expect(ids, JSON.stringify(text)).toEqual(referenceBpe(encode(text)));
      expect(decode(ids)).toBe(text);
      expect(countTokens(text, merges)).toBe(ids.length);
      if (ids.length < encode(text).length) merged++;
    }
    expect(merged).toBeGreaterThan(400);
  });

  it('keeps marker and newline ids: a chat prompt still ends <|assistant|>, \\n', () => {
    const ids = encodePrompt(
      { kind: 'chat', messages: [{ role: 'user', content: 'the quick café' }] },
      merges,
    );
    expect(pieces(ids)).toEqual([
      '<|user|>',
      '\n',
      'the quick',
      ' café',
      '\n',
      '<|assistant|>',
      '\n',
    ]);
  });
});

const FORMATS: [string, OutputFormat][] = [
  ['think', { reasoning: 'think' }],
  ['hermes', { tools: 'hermes' }],
  ['think + hermes', { reasoning: 'think', tools: 'hermes' }],
  ['harmony', 'harmony'],
];
const functions = [{ name: 'web_search', parameters: { properties: { query: {} } } }];

/** The chat that continues `input` from its assistant's partial raw text. */
function resumedChat(input: ChatInput, partial: string): GenerationInput {
  return {
    ...input,
    messages: [...input.messages, { role: 'assistant', content: partial }],
    continueFinalMessage: true,
    addGenerationPrompt: false,
  };
}

describe('generation with merges', () => {
  it('writes unmerged ids, whose text re-encodes to fewer ids', () => {
    const g = expectedGeneration(chat, { maxTokens: 24, merges: true });
    expect(g).toMatchObject({ text: TEXT, promptTokens: 26 });
    expect(g.ids).toHaveLength(24);
    expect(encode(g.text, merges)).toHaveLength(22); // ü and ñ: one id each, not two
    expect(g.ids.every((id) => id < VOCABULARY_SIZE)).toBe(true);
    // The prompt holds nothing to merge: the same answer as without merges.
    expect(g.ids).toEqual(expectedGeneration(chat, { maxTokens: 24 }).ids);
    // prompt + generated text, tokenized again: not the prompt's ids and the generated ones.
    const completion = expectedGeneration(
      { kind: 'completion', prompt: PROMPT },
      { maxTokens: 24, merges: true },
    );
    const again = encode(PROMPT + completion.text, merges);
    expect(again).not.toEqual([...completion.promptIds, ...completion.ids]);
    expect(again.length).toBeLessThan(completion.promptTokens + completion.ids.length);
  });

  it.each([['plain', undefined] as const, ...FORMATS])(
    '%s: continues from the prompt ids and the first k generated ids exactly, at every k',
    (_, format) => {
      // A structured answer is up to ~90 tokens: all of it, then it stops.
      const limits = {
        maxTokens: format ? 120 : 32,
        merges: true,
        ...(format && { outputFormat: format }),
      };
      for (let i = 0; i < 12; i++) {
        const input: GenerationInput = {
          kind: 'chat',
          messages: [
            { role: 'user', content: `the quick café ${i} über cat ${'日'.repeat(i % 3)}` },
          ],
          ...(i % 2 === 1 && { tools: functions }),
        };
        expect(encodePrompt(input, merges).length).toBeLessThan(encodePrompt(input).length);
        const full = expectedGeneration(input, limits);
        for (let k = 0; k <= full.ids.length; k++) {
          const rest = expectedGeneration(continuationInput(input, full.ids.slice(0, k), merges), {
            ...limits,
            maxTokens: limits.maxTokens - k,
          });
          expect(rest.ids).toEqual(full.ids.slice(k));
        }
      }
    },
  );

  it('continues a chat from its partial text with other prompt ids (continue_final_message)', () => {
    const g = expectedGeneration(chat, { maxTokens: 24, merges: true });
    const k = 9;
    const partial = decode(g.ids.slice(0, k));
    expect(partial).toBe('over über while quick');
    const resumed: GenerationInput = {
      kind: 'chat',
      messages: [...chat.messages, { role: 'assistant', content: partial }],
      continueFinalMessage: true,
      addGenerationPrompt: false,
    };
    const rest = expectedGeneration(resumed, { maxTokens: 24 - k, merges: true });
    expect(rest.promptTokens).toBe(34); // not 26 + 9: "ü" is one id
    // Other ids, so the hash-based generation goes elsewhere: a text continuation is inexact.
    expect(partial + rest.text).not.toBe(g.text);
    // Without merges the same request continues exactly.
    const exact = expectedGeneration(resumed, { maxTokens: 24 - k });
    expect(exact.promptTokens).toBe(g.promptTokens + k);
    expect(partial + exact.text).toBe(g.text);
  });
});

describe('structured answers with merges', () => {
  it.each(FORMATS)(
    '%s: continues from the partial text at every cut to the rest of the document',
    (_, format) => {
      const limits = {
        maxTokens: 200,
        outputFormat: format,
        skipSpecialTokens: false,
        includeStopStrInOutput: true,
        merges: true,
      };
      let merged = 0;
      for (let q = 0; q < 4; q++) {
        for (const tools of [{}, { tools: functions }]) {
          const input = {
            kind: 'chat' as const,
            messages: [{ role: 'user' as const, content: `question ${q}` }],
            ...tools,
          };
          const full = expectedGeneration(input, limits);
          const document = decode(full.ids);
          for (let k = 0; k < full.ids.length; k++) {
            const partial = decode(full.ids.slice(0, k));
            if (partial.endsWith('\uFFFD')) continue; // the client has whole characters only
            const resumed = resumedChat(input, partial);
            // Text the merges change: the document is then continued from its bytes.
            if (encodePrompt(resumed, merges).length < encodePrompt(resumed).length) merged++;
            const rest = expectedGeneration(resumed, { ...limits, maxTokens: 200 - k });
            expect(rest.text).toBe(document.slice(partial.length));
            expect(rest.finishReason).toBe('stop');
          }
        }
      }
      expect(merged).toBeGreaterThan(20);
    },
  );
});

describe('an engine with merges, over HTTP', () => {
  it('/tokenize and /detokenize merge; merged ids are prompt ids only with merges', async () => {
    const { url } = await start({ merges: true });
    const tokenized = await post(`${url}/tokenize`, {
      prompt: 'the café',
      return_token_strs: true,
    });
    expect(tokenized.body).toMatchObject({
      count: 2,
      tokens: encode('the café', merges),
      token_strs: ['the', ' café'],
    });
    const messages = [{ role: 'user', content: 'over the quick café' }];
    const chatTokens = await post(`${url}/tokenize`, { messages });
    expect(chatTokens.body.tokens).toEqual(encodePrompt({ kind: 'chat', messages }, merges));
    const ids = encode(' come and go über', merges);
    expect((await post(`${url}/detokenize`, { tokens: ids })).body).toEqual({
      prompt: ' come and go über',
    });
    const completion = await post(`${url}/v1/completions`, { prompt: ids, max_tokens: 3 });
    expect(completion.status).toBe(200);
    // Without merges a merged id is out of vocabulary, as before.
    const { url: plain } = await start();
    const refused = await post(`${plain}/detokenize`, { tokens: ids });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({
      message: `Token id ${Math.max(...ids)} is out of vocabulary`,
    });
    expect((await post(`${plain}/tokenize`, { prompt: 'the café' })).body.count).toBe(7);
  });

  it('continues by ids at every k: the prompt ids (merged) and the first k generated ids', async () => {
    const { url } = await start({ merges: true });
    const messages = [{ role: 'user', content: 'Hello café über the quick' }];
    const input: GenerationInput = { kind: 'chat', messages };
    const first = await post(`${url}/v1/chat/completions`, {
      messages,
      max_tokens: 24,
      return_token_ids: true,
    });
    const promptIds = first.body.prompt_token_ids as number[];
    expect(promptIds).toEqual(encodePrompt(input, merges));
    expect(promptIds.length).toBeLessThan(encodePrompt(input).length);
    const ids = (first.body.choices as Json[])[0]!.token_ids as number[];
    expect(ids).toEqual(expectedGeneration(input, { maxTokens: 24, merges: true }).ids);
    for (let k = 0; k < ids.length; k++) {
      const answer = await post(`${url}/v1/completions`, {
        prompt: [...promptIds, ...ids.slice(0, k)],
        max_tokens: 24 - k,
        return_token_ids: true,
      });
      const choice = (answer.body.choices as Json[])[0]!;
      expect(choice.token_ids).toEqual(ids.slice(k));
    }
  });

  it('answers continue_final_message with the partial text, its prompt re-tokenized with merges', async () => {
    const { url } = await start({ merges: true });
    const full = await post(`${url}/v1/chat/completions`, {
      messages: chat.messages,
      max_tokens: 24,
      return_token_ids: true,
    });
    const ids = (full.body.choices as Json[])[0]!.token_ids as number[];
    const k = 9;
    const partial = decode(ids.slice(0, k));
    const answer = await post(`${url}/v1/chat/completions`, {
      messages: [...chat.messages, { role: 'assistant', content: partial }],
      continue_final_message: true,
      add_generation_prompt: false,
      max_tokens: 24 - k,
    });
    expect(answer.status).toBe(200);
    const usage = answer.body.usage as Json;
    expect(usage.prompt_tokens).toBe(34);
    expect(usage.prompt_tokens).not.toBe(((full.body.usage as Json).prompt_tokens as number) + k);
    const message = (answer.body.choices as Json[])[0]!.message as Json;
    const resumed = resumedChat(chat, partial);
    expect(message.content).toBe(
      expectedGeneration(resumed, { maxTokens: 24 - k, merges: true }).text,
    );
  });

  it.each([
    ['harmony', 'harmony', '<|channel|>analysis<|message|>'],
    ['think', { reasoning: 'think' }, '<think>'],
  ] as const)(
    '%s: continue_final_message inside the reasoning yields the rest of the reasoning and the content',
    async (_, format, head) => {
      const { url } = await start({ merges: true, outputFormat: format });
      const input = {
        kind: 'chat' as const,
        messages: [{ role: 'user' as const, content: 'question 0' }],
      };
      const limits = { maxTokens: 200, outputFormat: format, merges: true };
      const full = expectedGeneration(input, { ...limits, skipSpecialTokens: false });
      const out = expectedChatOutput(input, limits);
      // The first cut inside the reasoning whose text the merges re-tokenize.
      const cut = full.ids
        .map((_, k) => decode(full.ids.slice(0, k)))
        .find((partial) => {
          const soFar = partial.slice(head.length);
          if (partial.endsWith('\uFFFD') || !partial.startsWith(head)) return false;
          if (!out.reasoning.startsWith(soFar) || soFar.length >= out.reasoning.length)
            return false;
          const resumed = resumedChat(input, partial);
          return encodePrompt(resumed, merges).length < encodePrompt(resumed).length;
        });
      expect(cut).toBeDefined();
      const answer = await post(`${url}/v1/chat/completions`, {
        messages: [...input.messages, { role: 'assistant', content: cut }],
        continue_final_message: true,
        add_generation_prompt: false,
        max_tokens: 200,
      });
      expect(answer.status).toBe(200);
      expect((answer.body.usage as Json).prompt_tokens).toBe(
        encodePrompt(resumedChat(input, cut!), merges).length,
      );
      const choice = (answer.body.choices as Json[])[0]!;
      const reasoningSoFar = cut!.slice(head.length);
      expect(choice.message).toMatchObject({
        reasoning: out.reasoning.slice(reasoningSoFar.length),
        content: out.content,
      });
      expect(choice.finish_reason).toBe('stop');
    },
  );
});
