/**
 * Reasoning and tool calls: the mock as a reasoning / tool-calling model served by vLLM
 * with parsers. The chat endpoint's parsed output (streamed and not) accumulates to
 * `expectedChatOutput`; the raw text on /v1/completions continues a cut answer at every
 * token; the new markers tokenize as added tokens and the special ones follow
 * `skip_special_tokens`.
 */
import { describe, expect, it } from 'vitest';
import {
  continuationInput,
  createMockEngine,
  decode,
  encode,
  encodePrompt,
  expectedChatOutput,
  expectedGeneration,
  renderChatPrompt,
} from '../src/index.js';
import type { ChatOutput, GenerationInput, OutputFormat } from '../src/index.js';
import { outputFormatFromFlags } from '../src/output-format.js';
import { tokenize } from '../src/tokenizer.js';
import { start } from './start.js';

type Json = Record<string, unknown>;

async function post(url: string, body: unknown): Promise<Json> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return (await res.json()) as Json;
}

/** The data events of an SSE answer, parsed (without `[DONE]`). */
async function events(url: string, body: Json): Promise<Json[]> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const raw = await res.text();
  expect(raw.endsWith('data: [DONE]\n\n')).toBe(true);
  return raw
    .split('\n\n')
    .filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]')
    .map((e) => JSON.parse(e.slice('data: '.length)) as Json);
}

const tools = [
  {
    type: 'function' as const,
    function: {
      name: 'web_search',
      description: 'Search the web',
      parameters: {
        type: 'object',
        properties: { query: { type: 'string' }, n: { type: 'integer' } },
      },
    },
  },
  { type: 'function' as const, function: { name: 'open_url' } },
];
const functions = tools.map((t) => t.function);

const FORMATS: [string, OutputFormat][] = [
  ['think', { reasoning: 'think' }],
  ['hermes', { tools: 'hermes' }],
  ['think + hermes', { reasoning: 'think', tools: 'hermes' }],
  ['harmony', 'harmony'],
];
const CASES = FORMATS.flatMap(([name, format]) => [
  { name, format, withTools: false },
  { name: `${name} with tools`, format, withTools: true },
]);

const chatOf = (content: string, withTools: boolean): GenerationInput => ({
  kind: 'chat',
  messages: [{ role: 'user', content }],
  ...(withTools ? { tools: functions } : {}),
});

const MAX = 200;

describe('the added tokens', () => {
  it('are one id each, after every id that existed before', () => {
    // The words (22, bare and spaced) and the role markers kept their ids.
    expect(encode('the')).toEqual([256]);
    expect(encode('<|system|>')).toEqual([300]);
    expect(encode('<|developer|>')).toEqual([304]);
    const added = [
      '<think>',
      '</think>',
      '<tool_call>',
      '</tool_call>',
      '<|start|>',
      '<|end|>',
      '<|message|>',
      '<|channel|>',
      '<|constrain|>',
      '<|return|>',
      '<|call|>',
    ];
    expect(added.map((m) => encode(m))).toEqual(added.map((_, i) => [305 + i]));
  });

  it.each([
    ['<|channel|>analysis<|message|>hi', ['<|channel|>', 'analysis', '<|message|>', 'hi']],
    ['x<think>y', ['x', '<think>', 'y']],
    ['a <tool_call>\n{"a": 1}', ['a', ' ', '<tool_call>', '\n', '{"a":', ' 1}']],
    ['<|user|>hello<|assistant|>', ['<|user|>', 'hello', '<|assistant|>']],
    ['<|return|> <|call|>', ['<|return|>', ' ', '<|call|>']],
  ])('are split out of %j before the pieces, as added tokens are', (text, pieces) => {
    expect(tokenize(text)).toEqual(pieces);
    expect(decode(encode(text))).toBe(text);
  });

  it('encodes <|channel|>analysis<|message|>hi as marker, analysis, marker, hi', () => {
    const [channel, message] = [encode('<|channel|>')[0], encode('<|message|>')[0]];
    expect(encode('<|channel|>analysis<|message|>hi')).toEqual([
      channel,
      ...encode('analysis'),
      message,
      ...encode('hi'),
    ]);
  });
});

describe('outputFormatFromFlags (the CLI: vLLM arguments to a format)', () => {
  it.each([
    [{ model: 'm' }, undefined],
    [{ model: 'm', reasoningParser: 'deepseek_r1' }, { reasoning: 'think' }],
    [{ model: 'm', reasoningParser: 'qwen3' }, { reasoning: 'think' }],
    [{ model: 'm', toolCallParser: 'hermes', enableAutoToolChoice: true }, { tools: 'hermes' }],
    // As vLLM: a tool-call parser without --enable-auto-tool-choice parses nothing.
    [{ model: 'm', toolCallParser: 'hermes' }, undefined],
    [
      {
        model: 'Qwen/Qwen3-8B',
        reasoningParser: 'qwen3',
        toolCallParser: 'hermes',
        enableAutoToolChoice: true,
      },
      { reasoning: 'think', tools: 'hermes' },
    ],
    [{ model: 'openai/gpt-oss-20b' }, 'harmony'],
    [{ model: '/models/GPT-OSS-120B' }, 'harmony'],
    [
      {
        model: 'openai/gpt-oss-20b',
        reasoningParser: 'openai_gptoss',
        toolCallParser: 'openai',
        enableAutoToolChoice: true,
      },
      'harmony',
    ],
  ] as const)('%j → %j', (flags, format) => {
    expect(outputFormatFromFlags(flags)).toEqual(format);
  });

  it.each([
    [
      { model: 'm', reasoningParser: 'granite' },
      /reasoningParser "granite" .* use deepseek_r1 or qwen3/,
    ],
    [{ model: 'm', toolCallParser: 'mistral' }, /toolCallParser "mistral" .* use hermes/],
    [
      { model: 'm', enableAutoToolChoice: true },
      /enableAutoToolChoice requires --tool-call-parser/,
    ],
    [{ model: 'gpt-oss-20b', reasoningParser: 'qwen3' }, /gpt-oss .* use openai_gptoss/],
    [{ model: 'm', reasoningParser: 'openai_gptoss' }, /use deepseek_r1 or qwen3/],
  ] as const)('%j is refused, naming what is supported', (flags, message) => {
    expect(() => outputFormatFromFlags(flags)).toThrow(message);
  });

  it('refuses a bad library outputFormat', () => {
    const bad = { reasoning: 'granite' } as unknown as OutputFormat;
    expect(() => createMockEngine({ outputFormat: bad })).toThrow(/outputFormat.reasoning/);
  });
});

describe('the chat template with tools', () => {
  it('renders one JSON line per function before the messages; tool_choice none renders none', async () => {
    expect(renderChatPrompt([{ role: 'user', content: 'Hi' }], { tools: [{ name: 'f' }] })).toBe(
      '<|developer|>\n# Tools\n{"name":"f"}\n<|user|>\nHi\n<|assistant|>\n',
    );
    const { url } = await start();
    const messages = [{ role: 'user', content: 'Hi' }];
    const withTools = await post(`${url}/tokenize`, { messages, tools });
    expect(withTools.tokens).toEqual(encodePrompt({ kind: 'chat', messages, tools: functions }));
    const none = await post(`${url}/tokenize`, { messages, tools, tool_choice: 'none' });
    expect(none.tokens).toEqual(encodePrompt({ kind: 'chat', messages }));
    const bad = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages, tools: [{ type: 'function' }] }),
    });
    expect(bad.status).toBe(400);
  });
});

describe('structured answers (pure)', () => {
  it.each(CASES)('$name: the documented shape, 30 to ~90 tokens', ({ format, withTools }) => {
    for (let i = 0; i < 20; i++) {
      const input = chatOf(`question ${i}`, withTools);
      const raw = expectedGeneration(input, {
        maxTokens: MAX,
        outputFormat: format,
        skipSpecialTokens: false,
        includeStopStrInOutput: true,
      });
      expect(raw.finishReason).toBe('stop');
      expect(raw.ids.length).toBeGreaterThanOrEqual(30);
      expect(raw.ids.length).toBeLessThanOrEqual(95);
      const out = expectedChatOutput(input, { maxTokens: MAX, outputFormat: format });
      const call = withTools ? out.toolCalls[0] : undefined;
      const hermesCall =
        call && `<tool_call>\n{"name": "web_search", "arguments": ${call.arguments}}\n</tool_call>`;
      if (format === 'harmony') {
        expect(raw.text).toBe(
          call
            ? `<|channel|>analysis<|message|>${out.reasoning}<|end|><|start|>assistant<|channel|>commentary to=functions.web_search <|constrain|>json<|message|>${call.arguments}<|call|>`
            : `<|channel|>analysis<|message|>${out.reasoning}<|end|><|start|>assistant<|channel|>final<|message|>${out.content}<|return|>`,
        );
        expect(raw.stopReason).toBe(call ? encode('<|call|>')[0] : null);
      } else if (typeof format === 'object' && format.reasoning === 'think') {
        expect(out.reasoning).toMatch(/^\n\S.*\S\n$/);
        const after = format.tools === 'hermes' && call ? `\n\n${hermesCall}` : out.content;
        expect(raw.text).toBe(`<think>${out.reasoning}</think>${after}`);
        expect(out.content.startsWith('\n\n')).toBe(true);
      } else {
        expect(raw.text).toBe(call ? hermesCall : out.content);
      }
      if (call) {
        expect(call.name).toBe('web_search');
        const args = JSON.parse(call.arguments) as Record<string, string>;
        expect(Object.keys(args)).toEqual(['query']);
        expect(call.arguments).toBe(
          format === 'harmony' ? JSON.stringify(args) : `{"query": ${JSON.stringify(args.query)}}`,
        );
      }
      // Without a tool parser a tool call is content (as vLLM's parsers leave it).
      const parsesTools = format === 'harmony' || format.tools === 'hermes';
      expect(out.toolCalls).toHaveLength(withTools && parsesTools ? 1 : 0);
      expect(out.finishReason).toBe(withTools && parsesTools ? 'tool_calls' : 'stop');
      if (withTools && !parsesTools)
        expect(out.content).toContain('<tool_call>\n{"name": "web_search"');
    }
  });

  it('has multi-byte characters split over tokens, and an answer without a format is as before', () => {
    const input = chatOf('question', true);
    const raw = expectedGeneration(input, { maxTokens: MAX, outputFormat: 'harmony' });
    expect(raw.deltas).toContain('');
    expect(expectedGeneration(input, { maxTokens: 40 }).ids).toEqual(
      expectedGeneration({ kind: 'completion', prompt: encodePrompt(input) }, { maxTokens: 40 })
        .ids,
    );
  });

  it.each(CASES)(
    '$name: the prompt ids and the first k generated ids continue exactly, at every k',
    ({ format, withTools }) => {
      for (let i = 0; i < 8; i++) {
        const input = chatOf(`continue ${i} ${'🙂'.repeat(i)}`, withTools);
        const limits = { maxTokens: MAX, outputFormat: format, skipSpecialTokens: false };
        const full = expectedGeneration(input, limits);
        for (let k = 0; k <= full.ids.length; k++) {
          const rest = expectedGeneration(continuationInput(input, full.ids.slice(0, k)), {
            ...limits,
            maxTokens: MAX - k,
          });
          expect(rest.ids).toEqual(full.ids.slice(k));
          expect(rest.finishReason).toBe('stop');
          const before = decode(full.ids.slice(0, k)).replace(/\uFFFD+$/, '');
          expect(rest.text).toBe(full.text.slice(before.length));
        }
      }
    },
  );

  it('continues a final assistant message that starts the document, parsed (continue_final_message)', () => {
    for (const format of [{ tools: 'hermes' }, 'harmony'] as const) {
      const input = chatOf('resume', true);
      const limits = { maxTokens: MAX, outputFormat: format };
      const raw = expectedGeneration(input, { ...limits, skipSpecialTokens: false });
      const [call] = expectedChatOutput(input, limits).toolCalls;
      const cut = raw.text.indexOf(call!.arguments) + 3;
      const resumed: GenerationInput = {
        kind: 'chat',
        messages: [
          { role: 'user', content: 'resume' },
          { role: 'assistant', content: raw.text.slice(0, cut) },
        ],
        tools: functions,
        continueFinalMessage: true,
        addGenerationPrompt: false,
      };
      expect(expectedChatOutput(resumed, limits)).toEqual({
        reasoning: '',
        content: '',
        toolCalls: [{ name: 'web_search', arguments: call!.arguments.slice(3) }],
        finishReason: 'tool_calls',
      });
    }
  });

  it('continues by text when the answer so far was tokenized differently (byte by byte)', () => {
    for (const [, format] of FORMATS) {
      const input = chatOf('bytes', true);
      const limits = { maxTokens: MAX, outputFormat: format, skipSpecialTokens: false };
      const full = expectedGeneration(input, limits);
      const bytes = [...new TextEncoder().encode(decode(full.ids))];
      for (let m = 0; m < bytes.length; m++) {
        const rest = expectedGeneration(
          { kind: 'completion', prompt: [...encodePrompt(input), ...bytes.slice(0, m)] },
          limits,
        );
        expect(decode([...bytes.slice(0, m), ...rest.ids])).toBe(decode(full.ids));
        expect(rest.finishReason).toBe('stop');
      }
      // Text the document does not start with: the plain generation, no end.
      const off = expectedGeneration(
        { kind: 'completion', prompt: [...encodePrompt(input), ...encode('elsewhere')] },
        { ...limits, maxTokens: 10 },
      );
      expect(off.finishReason).toBe('length');
    }
  });
});

/** Accumulate a chat stream's parsed deltas, checking each chunk's shape. */
function accumulate(chunks: Json[], returnTokenIds: boolean) {
  const out: ChatOutput = { reasoning: '', content: '', toolCalls: [], finishReason: 'stop' };
  const ids: number[] = [];
  let callId: string | undefined;
  for (const [i, chunk] of chunks.entries()) {
    const [choice] = chunk.choices as Json[];
    if (choice === undefined) continue; // the usage chunk
    const delta = choice.delta as Json;
    if (i === 0) {
      expect(delta).toEqual({ role: 'assistant', content: '' });
      continue;
    }
    if (returnTokenIds) {
      expect(choice.token_ids).toHaveLength(1);
      ids.push(...(choice.token_ids as number[]));
    }
    expect(
      Object.keys(delta).every((k) => ['reasoning', 'content', 'tool_calls'].includes(k)),
    ).toBe(true);
    if (typeof delta.reasoning === 'string') out.reasoning += delta.reasoning;
    if (typeof delta.content === 'string') out.content += delta.content;
    for (const call of (delta.tool_calls ?? []) as Json[]) {
      const fn = call.function as { name?: string; arguments: string };
      expect(call.index).toBe(0);
      if (fn.name !== undefined) {
        expect(call).toEqual({
          index: 0,
          id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/),
          type: 'function',
          function: { name: fn.name, arguments: fn.arguments },
        });
        callId = call.id as string;
        out.toolCalls.push({ name: fn.name, arguments: '' });
      } else expect(Object.keys(call)).toEqual(['index', 'function']);
      out.toolCalls[0]!.arguments += fn.arguments;
    }
    if (choice.finish_reason !== null) out.finishReason = choice.finish_reason as 'stop';
  }
  return { out, ids, callId };
}

describe('the chat endpoint parses the answer, as vLLM with parsers', () => {
  it.each(CASES)(
    '$name: streamed and not, the output is expectedChatOutput; every chunk carries its id',
    async ({ format, withTools }) => {
      const { url, client } = await start({ outputFormat: format });
      const messages = [{ role: 'user' as const, content: `Tell me ${String(withTools)}` }];
      const input = chatOf(messages[0]!.content, withTools);
      const expected = expectedChatOutput(input, { maxTokens: MAX, outputFormat: format });
      const ids = expectedGeneration(input, { maxTokens: MAX, outputFormat: format }).ids;
      const body = {
        model: 'mock-model',
        messages,
        max_tokens: MAX,
        ...(withTools ? { tools } : {}),
      };

      const streamed = await events(`${url}/v1/chat/completions`, {
        ...body,
        return_token_ids: true,
      });
      const got = accumulate(streamed, true);
      expect(got.out).toEqual(expected);
      expect(got.ids).toEqual(ids);
      // One chunk per token: the role chunk, then one each.
      expect(streamed).toHaveLength(1 + ids.length);

      // The official client sees the same, tool call deltas included.
      const stream = await client.chat.completions.create({ ...body, stream: true });
      let reasoning = '';
      let content = '';
      let args = '';
      let finish: string | null = null;
      for await (const chunk of stream) {
        const delta = chunk.choices[0]?.delta as { reasoning?: string; content?: string | null };
        reasoning += delta?.reasoning ?? '';
        content += delta?.content ?? '';
        args += chunk.choices[0]?.delta.tool_calls?.[0]?.function?.arguments ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      expect({ reasoning, content, args, finish }).toEqual({
        reasoning: expected.reasoning,
        content: expected.content,
        args: expected.toolCalls[0]?.arguments ?? '',
        finish: expected.finishReason,
      });

      const full = await client.chat.completions.create(body);
      const message = full.choices[0]!.message as unknown as Json;
      const called = expected.toolCalls.length > 0;
      expect(message).toEqual({
        role: 'assistant',
        content: expected.content === '' && called ? null : expected.content,
        refusal: null,
        annotations: null,
        audio: null,
        function_call: null,
        tool_calls: expected.toolCalls.map((call) => ({
          id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/),
          type: 'function',
          function: call,
        })),
        reasoning: expected.reasoning === '' ? null : expected.reasoning,
      });
      expect(full.choices[0]!.finish_reason).toBe(expected.finishReason);
      expect(full.usage?.completion_tokens).toBe(ids.length);
    },
  );

  it('sends marker tokens as {} deltas, the header once, then argument pieces', async () => {
    const { url } = await start({ outputFormat: { reasoning: 'think', tools: 'hermes' } });
    const streamed = await events(`${url}/v1/chat/completions`, {
      messages: [{ role: 'user', content: 'call it' }],
      tools,
      max_tokens: MAX,
      return_token_ids: true,
    });
    const chunks = streamed.slice(1).map((e) => (e.choices as Json[])[0]!);
    const deltas = chunks.map((c) => c.delta as Json);
    const ids = (from: number, to: number) =>
      decode(chunks.slice(from, to).flatMap((c) => c.token_ids as number[]));
    const at = (marker: string) =>
      chunks.findIndex((c) => (c.token_ids as number[])[0] === encode(marker)[0]);
    expect(deltas[at('<think>')]).toEqual({});
    expect(deltas[at('<think>') + 1]).toEqual({ reasoning: '\n' });
    expect(deltas[at('</think>')]).toEqual({});
    // `\n\n` is not in the vocabulary: two byte tokens.
    expect(deltas.slice(at('</think>') + 1, at('<tool_call>'))).toEqual([
      { content: '\n' },
      { content: '\n' },
    ]);
    const header = deltas.findIndex((d) => d.tool_calls !== undefined);
    expect(deltas[header]).toMatchObject({
      tool_calls: [{ index: 0, type: 'function', function: { name: 'web_search', arguments: '' } }],
    });
    // From <tool_call> to the header (the name's closing quote), everything is markup.
    expect(deltas.slice(at('<tool_call>'), header).every((d) => Object.keys(d).length === 0)).toBe(
      true,
    );
    expect(ids(at('<tool_call>'), header + 1)).toBe('<tool_call>\n{"name": "web_search"');
    // Then `, "arguments": ` (markup), then the arguments' raw text, a token at a time (these
    // pieces are not in the vocabulary: a byte each).
    const args = deltas.findIndex((d, i) => i > header && d.tool_calls !== undefined);
    expect(ids(header + 1, args)).toBe(', "arguments": ');
    expect(deltas.slice(header + 1, args).every((d) => Object.keys(d).length === 0)).toBe(true);
    expect(deltas[args]).toEqual({
      tool_calls: [{ index: 0, function: { arguments: '{' } }],
    });
    expect(deltas.at(-1)).toEqual({}); // </tool_call>
    expect((streamed.at(-1)!.choices as Json[])[0]!.finish_reason).toBe('tool_calls');
  });

  it.each([true, false])(
    'Harmony (skip_special_tokens %s): the header goes out with <|message|>, the rest is {}',
    async (skip) => {
      const { url } = await start({ outputFormat: 'harmony' });
      const streamed = await events(`${url}/v1/chat/completions`, {
        messages: [{ role: 'user', content: 'call it' }],
        tools,
        max_tokens: MAX,
        return_token_ids: true,
        skip_special_tokens: skip,
      });
      const chunks = streamed.slice(1).map((e) => (e.choices as Json[])[0]!);
      const header = chunks.findIndex((c) => (c.delta as Json).tool_calls !== undefined);
      const tokens = chunks.map((c) => decode(c.token_ids as number[]));
      expect(tokens[header]).toBe('<|message|>');
      expect(tokens.slice(header - 6, header).join('')).toBe(' <|constrain|>json');
      const end = tokens.indexOf('<|end|>');
      expect(
        chunks.slice(end, header).every((c) => Object.keys(c.delta as Json).length === 0),
      ).toBe(true);
      expect(chunks.at(-1)).toMatchObject({
        delta: {},
        token_ids: encode('<|call|>'),
        finish_reason: 'tool_calls',
        stop_reason: encode('<|call|>')[0],
      });
    },
  );

  it('cut by max_tokens or a stop string, the parsed output is still expectedChatOutput', async () => {
    const { url } = await start({ outputFormat: 'harmony' });
    const messages = [{ role: 'user', content: 'short' }];
    const input = chatOf('short', true);
    const full = expectedGeneration(input, { maxTokens: MAX, outputFormat: 'harmony' });
    for (const limits of [
      { maxTokens: 12 },
      { maxTokens: full.ids.length - 3 },
      { maxTokens: MAX, stop: [' '] },
      { maxTokens: MAX, stop: ['json'] },
    ]) {
      const expected = expectedChatOutput(input, { ...limits, outputFormat: 'harmony' });
      const body = {
        messages,
        tools,
        max_tokens: limits.maxTokens,
        ...('stop' in limits ? { stop: limits.stop } : {}),
      };
      expect(accumulate(await events(`${url}/v1/chat/completions`, body), false).out).toEqual(
        expected,
      );
      expect(expected.finishReason).not.toBe('tool_calls');
    }
  });
});

describe('/v1/completions: the raw text, and continuing a cut chat answer', () => {
  it('honours skip_special_tokens: Harmony markers out by default, in with false', async () => {
    const { url } = await start({ outputFormat: 'harmony' });
    const input = chatOf('markers', false);
    const prompt = encodePrompt(input);
    const skipped = await post(`${url}/v1/completions`, { prompt, max_tokens: MAX });
    const kept = await post(`${url}/v1/completions`, {
      prompt,
      max_tokens: MAX,
      skip_special_tokens: false,
    });
    const [s, k] = [skipped, kept].map((b) => (b.choices as Json[])[0]!);
    expect(s!.text).not.toMatch(/<\|/);
    expect(k!.text).toMatch(/^<\|channel\|>analysis<\|message\|>/);
    // <|return|> is the EOS: left out of the text even with the markers.
    expect(k!.text).toBe(k!.text!.toString().replace(/<\|return\|>$/, ''));
    expect(s!.text).toBe((k!.text as string).replace(/<\|[a-z]+\|>/g, ''));
    expect(s!.finish_reason).toBe('stop');
    const ids = expectedGeneration(input, { maxTokens: MAX, outputFormat: 'harmony' }).ids;
    // /detokenize keeps special tokens (vLLM's tokenizer.decode).
    const detok = await post(`${url}/detokenize`, { tokens: ids });
    expect(detok.prompt).toBe(`${k!.text as string}<|return|>`);
    // <think> is not special: it stays either way.
    const { url: thinkUrl } = await start({ outputFormat: { reasoning: 'think' } });
    const think = await post(`${thinkUrl}/v1/completions`, { prompt, max_tokens: MAX });
    expect((think.choices as Json[])[0]!.text).toMatch(/^<think>\n/);
  });

  it.each(CASES)(
    '$name: chat ids [0, k) after the prompt ids yield the remaining ids and raw text, at every k',
    async ({ format, withTools }) => {
      const { url } = await start({ outputFormat: format });
      const messages = [{ role: 'user', content: 'Hello there' }];
      const first = (
        await events(`${url}/v1/chat/completions`, {
          messages,
          max_tokens: MAX,
          return_token_ids: true,
          ...(withTools ? { tools } : {}),
        })
      )[0]!;
      const promptIds = first.prompt_token_ids as number[];
      const input = chatOf('Hello there', withTools);
      expect(promptIds).toEqual(encodePrompt(input));
      const raw = expectedGeneration(input, {
        maxTokens: MAX,
        outputFormat: format,
        skipSpecialTokens: false,
      });
      for (let k = 0; k < raw.ids.length; k++) {
        const answer = await post(`${url}/v1/completions`, {
          prompt: [...promptIds, ...raw.ids.slice(0, k)],
          max_tokens: MAX - k,
          skip_special_tokens: false,
          return_token_ids: true,
        });
        const choice = (answer.choices as Json[])[0]!;
        expect(choice.token_ids).toEqual(raw.ids.slice(k));
        const before = decode(raw.ids.slice(0, k)).replace(/\uFFFD+$/, '');
        expect(choice.text).toBe(raw.text.slice(before.length));
        expect(choice.finish_reason).toBe('stop');
      }
    },
  );
});
