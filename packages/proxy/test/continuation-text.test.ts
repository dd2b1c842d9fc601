/**
 * The text path: a deployment whose engine returns no token ids (SGLang) is continued from
 * the text the client received, chat as the partial assistant message with
 * `continue_final_message`, completions as prompt + text. Real mock-engine processes stand
 * in for SGLang (the view says `sglang`, so the proxy asks for no ids and sends text).
 * Counted `inexact` (`retokenized`): the continuing engine tokenizes the text again.
 */
import { decode, expectedGeneration } from '@es/mock-engine';
import { afterEach, describe, expect, it } from 'vitest';
import { rig, runCleanups, startEngine } from './continuation-rig.js';
import { until } from './harness.js';

afterEach(runCleanups);

const MAX = 24;
const PROMPT = 'Write about elastic clusters';
const messages = [{ role: 'user' as const, content: PROMPT }];

async function cutOnTextEngine(k: number, extraFirst: string[] = [], extraSecond: string[] = []) {
  const first = await startEngine(
    'first',
    '--kill-mid-stream',
    String(k),
    '--tokens-per-second',
    '400',
    ...extraFirst,
  );
  const second = await startEngine('second', '--tokens-per-second', '400', ...extraSecond);
  const r = await rig([first], {}, { engine: 'sglang' });
  return { first, second, r };
}

/** A chat stream cut after k tokens on a text engine, read as a client reads it. */
async function chatCut(k: number, flags: string[] = []) {
  const { first, second, r } = await cutOnTextEngine(k, flags, flags);
  const stream = await r.client.chat.completions.create({
    model: 'llama',
    messages,
    max_tokens: MAX,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  const got = {
    text: '',
    finish: null as string | null,
    usage: undefined as
      { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined,
  };
  const reading = (async () => {
    for await (const chunk of stream) {
      got.text += chunk.choices[0]?.delta.content ?? '';
      got.finish = chunk.choices[0]?.finish_reason ?? got.finish;
      if (chunk.usage) got.usage = chunk.usage;
    }
  })();
  await until(() => first.requests().length > 0);
  r.add(second);
  await reading;
  return { ...got, first, second, r };
}

describe('the text path (an engine without token ids)', () => {
  it('continues a chat stream from the partial assistant message: the client sees no error', async () => {
    const k = 9;
    const { text, finish, usage, first, second, r } = await chatCut(k);
    // The mock's tokenizer gives the text back its ids: the continuation is the uncut rest.
    const g = expectedGeneration({ kind: 'chat', messages }, { maxTokens: MAX });
    expect(text).toBe(g.text);
    expect(finish).toBe(g.finishReason);
    // The first worker was asked for no ids; the second got the conversation again, the
    // text as the assistant's partial message, and the tokens left.
    expect(first.requests()[0]).toMatchObject({ returnTokenIds: false });
    expect(second.requests()).toMatchObject([
      {
        path: '/v1/chat/completions',
        requestId: first.requests()[0]!.requestId,
        promptTokens: g.promptTokens + k,
        maxTokens: MAX - k,
        returnTokenIds: false,
      },
    ]);
    expect(usage).toEqual({
      prompt_tokens: g.promptTokens,
      completion_tokens: g.completionTokens,
      total_tokens: g.promptTokens + g.completionTokens,
    });
    expect(r.continuations).toMatchObject([
      { outcome: 'inexact', reason: 'retokenized', generatedTokens: k, toWorker: 'second' },
    ]);
  });

  it('against a tokenizer with byte-pair merges: the text continues, inexact, with no error', async () => {
    // With --merges the continuing engine tokenizes the text received so far (`over über
    // while quick`, 9 generated ids) into fewer ids (ü is one id when merged): what it
    // generates from there is not the uncut rest, and nothing tells the client so but
    // the continuation's count (`inexact`, `retokenized`).
    const k = 9;
    const { text, finish, second, r } = await chatCut(k, ['--merges']);
    const merges = { maxTokens: MAX, merges: true };
    const uncut = expectedGeneration({ kind: 'chat', messages }, merges);
    const partial = decode(uncut.ids.slice(0, k));
    const resumed = expectedGeneration(
      {
        kind: 'chat',
        messages: [...messages, { role: 'assistant', content: partial }],
        continueFinalMessage: true,
      },
      { ...merges, maxTokens: MAX - k },
    );
    expect(text).toBe(partial + resumed.text);
    expect(text).not.toBe(uncut.text);
    expect(finish).toBe(resumed.finishReason);
    // Re-tokenized: fewer prompt ids than the prompt's and the generated ones.
    expect(resumed.promptTokens).toBeLessThan(uncut.promptTokens + k);
    expect(second.requests()).toMatchObject([{ promptTokens: resumed.promptTokens }]);
    expect(r.continuations).toMatchObject([{ outcome: 'inexact', reason: 'retokenized' }]);
    expect(r.records).toMatchObject([{ outcome: 'ok', status: 200 }]);
  });

  it('continues a non-streaming completion from prompt + text', async () => {
    const k = 5;
    const { first, second, r } = await cutOnTextEngine(k);
    const pending = r.client.completions.create({
      model: 'llama',
      prompt: PROMPT,
      max_tokens: MAX,
      temperature: 0,
    });
    await until(() => first.requests().length > 0);
    r.add(second);
    const answer = await pending;
    const g = expectedGeneration({ kind: 'completion', prompt: PROMPT }, { maxTokens: MAX });
    expect(answer.choices[0]!.text).toBe(g.text);
    expect(second.requests()).toMatchObject([
      { path: '/v1/completions', promptTokens: g.promptTokens + k, maxTokens: MAX - k },
    ]);
    expect(r.records).toMatchObject([{ outcome: 'ok', status: 200, continuations: 1 }]);
  });

  it.each([
    ['parsed output', { chatParsers: { reasoning: 'qwen3' } }, {}, 'parser'],
    ['token ids asked for', {}, { return_token_ids: true }, 'engine'],
  ] as const)('refuses what it cannot continue from text: %s', async (_, view, extra, reason) => {
    const first = await startEngine('first', '--die-mid-stream', '3', '--tokens-per-second', '400');
    const r = await rig([first], {}, { engine: 'sglang', ...view });
    const stream = await r.client.chat.completions.create({
      model: 'llama',
      messages,
      max_tokens: MAX,
      stream: true,
      ...extra,
    });
    await expect(
      (async () => {
        for await (const chunk of stream) void chunk;
      })(),
    ).rejects.toThrow(/failed mid-response/);
    expect(r.continuations).toMatchObject([{ outcome: 'refused', reason }]);
  });
});
