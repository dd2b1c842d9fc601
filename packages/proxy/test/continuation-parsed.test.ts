/**
 * Continuation of chat output the engine parses: real mock-engine processes started as vLLM
 * is for a reasoning / tool-calling model (`--reasoning-parser`, `--tool-call-parser hermes
 * --enable-auto-tool-choice`, a gpt-oss model for Harmony), cut inside each part of the
 * answer. The client must end with the same `reasoning`, `content` and `tool_calls` as the
 * uncut answer — the engine's own definition of it, `expectedChatOutput`, made from the
 * answer's known structure, not by parsing text — and the continuation must be exact.
 */
import { decode, expectedChatOutput, expectedGeneration } from '@es/mock-engine';
import type { ChatOutput, GenerationInput, OutputFormat } from '@es/mock-engine';
import type { ChatParsers } from '@es/pool';
import { afterEach, describe, expect, it } from 'vitest';
import { rig, runCleanups, startEngine } from './continuation-rig.js';
import { until } from './harness.js';

afterEach(runCleanups);

const MAX = 300;
const messages = [{ role: 'user' as const, content: 'Find out about elastic clusters' }];
const search = {
  name: 'search',
  description: 'Search the web',
  parameters: { type: 'object', properties: { query: { type: 'string' } } },
};

interface Model {
  /** The engine's arguments, as a deployment gives them to vLLM. */
  flags: string[];
  /** What the pool makes of those arguments. */
  parsers: ChatParsers;
  format: OutputFormat;
}

const HARMONY: Model = {
  flags: ['--model', 'openai/gpt-oss-20b'],
  parsers: { harmony: true },
  format: 'harmony',
};
const THINK: Model = {
  flags: ['--reasoning-parser', 'deepseek_r1'],
  parsers: { reasoning: 'deepseek_r1' },
  format: { reasoning: 'think' },
};
const THINK_HERMES: Model = {
  flags: [
    '--reasoning-parser',
    'qwen3',
    '--tool-call-parser',
    'hermes',
    '--enable-auto-tool-choice',
  ],
  parsers: { reasoning: 'qwen3', tools: 'hermes' },
  format: { reasoning: 'think', tools: 'hermes' },
};

const inputOf = (tools: boolean): GenerationInput => ({
  kind: 'chat',
  messages,
  ...(tools ? { tools: [search] } : {}),
});

/**
 * The number of generated tokens after which the raw answer has gone `extra` tokens past
 * the end of `after` without reaching `before`: a cut inside that part of the answer.
 */
function cutInside(model: Model, tools: boolean, after: string, before: string, extra = 3): number {
  const { ids } = expectedGeneration(inputOf(tools), {
    maxTokens: MAX,
    outputFormat: model.format,
  });
  for (let k = 1; k < ids.length; k++) {
    const text = decode(ids.slice(0, k));
    if (text.includes(after)) {
      const k2 = k + extra;
      if (decode(ids.slice(0, k2)).includes(before) || k2 >= ids.length) {
        throw new Error(`no room after ${after} in ${JSON.stringify(decode(ids))}`);
      }
      return k2;
    }
  }
  throw new Error(`${after} is not in ${JSON.stringify(decode(ids))}`);
}

interface Received extends ChatOutput {
  ids: (string | undefined)[];
}

type WireDelta = {
  content?: string | null;
  reasoning?: string;
  tool_calls?: { index: number; id?: string; function?: { name?: string; arguments?: string } }[];
};

/** The parsed answer as a streaming client accumulates it. */
async function streamed(client: Awaited<ReturnType<typeof rig>>['client'], tools: boolean) {
  const got: Received = {
    reasoning: '',
    content: '',
    toolCalls: [],
    finishReason: 'stop',
    ids: [],
  };
  const stream = await client.chat.completions.create({
    model: 'llama',
    messages,
    max_tokens: MAX,
    temperature: 0,
    stream: true,
    ...(tools ? { tools: [{ type: 'function' as const, function: search }] } : {}),
  });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice === undefined) continue;
    const delta = choice.delta as WireDelta;
    got.reasoning += delta.reasoning ?? '';
    got.content += delta.content ?? '';
    for (const call of delta.tool_calls ?? []) {
      const known = (got.toolCalls[call.index] ??= { name: '', arguments: '' });
      if (call.id !== undefined) got.ids[call.index] = call.id;
      known.name += call.function?.name ?? '';
      known.arguments += call.function?.arguments ?? '';
    }
    if (choice.finish_reason !== null) got.finishReason = choice.finish_reason as never;
  }
  return got;
}

/**
 * Cut the answer after k tokens on one engine; another continues it. `ask` sends the
 * request and reads the answer.
 */
async function cutAt<T>(
  model: Model,
  k: number,
  ask: (client: Awaited<ReturnType<typeof rig>>['client']) => Promise<T>,
) {
  const speed = ['--tokens-per-second', '400'];
  const first = await startEngine(
    'first',
    ...model.flags,
    '--kill-mid-stream',
    String(k),
    ...speed,
  );
  const second = await startEngine('second', ...model.flags, ...speed);
  const r = await rig([first], {}, { chatParsers: model.parsers });
  const pending = ask(r.client);
  await until(() => first.requests().length > 0);
  r.add(second);
  return { got: await pending, first, second, r };
}

const cases: [string, Model, boolean, string, string][] = [
  ['Harmony, inside the analysis channel', HARMONY, false, 'analysis<|message|>', '<|end|>'],
  ['Harmony, inside the final channel', HARMONY, false, 'final<|message|>', '<|return|>'],
  ['Harmony, inside a tool call', HARMONY, true, 'json<|message|>', '<|call|>'],
  ['<think>, inside the think block', THINK, false, '<think>', '</think>'],
  ['<think>, after the think block', THINK, false, '</think>', '\u0000'],
  ['<think> and Hermes, inside a tool call', THINK_HERMES, true, '"arguments": ', '</tool_call>'],
];

describe('a parsed chat answer cut inside each of its parts', () => {
  for (const [name, model, tools, after, before] of cases) {
    it(`${name}: the same reasoning, content and tool calls as uncut`, async () => {
      const k = cutInside(model, tools, after, before);
      const { got, second, r } = await cutAt(model, k, (client) => streamed(client, tools));
      const expected = expectedChatOutput(inputOf(tools), {
        maxTokens: MAX,
        outputFormat: model.format,
      });
      const { ids, ...output } = got;
      expect(output).toEqual(expected);
      if (tools) {
        expect(expected.toolCalls).toHaveLength(1);
        expect(ids[0]).toMatch(/^chatcmpl-tool-/);
      }
      // Exact: continued from every id, by the raw text with its markers.
      expect(second.requests()).toMatchObject([{ path: '/v1/completions', maxTokens: MAX - k }]);
      expect(r.continuations).toMatchObject([{ outcome: 'continued', generatedTokens: k }]);
    });
  }

  it('a non-streaming client gets the whole parsed message (Harmony tool call cut)', async () => {
    const k = cutInside(HARMONY, true, 'json<|message|>', '<|call|>');
    const { got: answer, r } = await cutAt(HARMONY, k, (client) =>
      client.chat.completions.create({
        model: 'llama',
        messages,
        max_tokens: MAX,
        temperature: 0,
        tools: [{ type: 'function', function: search }],
      }),
    );
    const expected = expectedChatOutput(inputOf(true), { maxTokens: MAX, outputFormat: 'harmony' });
    const message = answer.choices[0]!.message as unknown as WireDelta & {
      tool_calls: { function: { name: string; arguments: string } }[];
    };
    expect(message.reasoning).toBe(expected.reasoning);
    expect(message.content ?? '').toBe(expected.content);
    expect(message.tool_calls.map((c) => c.function)).toEqual(expected.toolCalls);
    expect(answer.choices[0]!.finish_reason).toBe('tool_calls');
    expect(r.continuations).toMatchObject([{ outcome: 'continued' }]);
  });
});
