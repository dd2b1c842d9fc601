/**
 * A prompt past the context length is refused before the engine makes its ids (a 30 MB
 * upload used to block the engine for seconds): the count that decides is the tokenizer's.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createMockEngine, encode, renderChatPrompt } from '../src/index.js';
import type { MockEngine } from '../src/index.js';
import { countTokens } from '../src/tokenizer.js';

const engines: MockEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

describe('countTokens', () => {
  it.each(
    [
      '',
      'the quick brown fox',
      'a  b\nc ',
      'the café naïve über 日本 🙂 señor',
      '<|user|>hello<|assistant|>',
      '   leading and trailing   ',
      'x'.repeat(10_000),
      'cat x ca xx the quick over the lazy dog',
    ].flatMap((text) => [false, true].map((merges) => [text, merges] as const)),
  )('counts what encode makes of %j (merges: %s)', (text, merges) => {
    expect(countTokens(text, { merges })).toBe(encode(text, { merges }).length);
  });
});

describe('a prompt past the context length', () => {
  it.each([false, true])(
    "is refused with vLLM's 400, counting every token of a 30 MB message (merges: %s)",
    async (merges) => {
      const engine = createMockEngine({ tokensPerSecond: 0, ttft: 0, maxModelLen: 4096, merges });
      engines.push(engine);
      const url = await engine.listen(0, '127.0.0.1');
      const messages = [{ role: 'user' as const, content: 'x'.repeat(30_000_000) }];
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mock-model', messages, max_tokens: 16 }),
      });
      expect(response.status).toBe(400);
      const prompt = countTokens(renderChatPrompt(messages), { merges });
      expect(prompt).toBeGreaterThan(30_000_000);
      expect(await response.json()).toMatchObject({
        error: {
          message: `This model's maximum context length is 4096 tokens. However, you requested ${prompt + 16} tokens (${prompt} in the messages, 16 in the completion). Please reduce the length of the messages or completion.`,
          param: 'max_tokens',
        },
      });
      // Still serving.
      expect((await fetch(`${url}/health`)).status).toBe(200);
    },
    30_000,
  );
});
