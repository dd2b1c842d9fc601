import { describe, expect, it } from 'vitest';
import {
  chatOutput,
  continuationBody,
  generationKind,
  planGeneration,
} from '../src/continuation/plan.js';
import type { ContinuablePlan } from '../src/continuation/plan.js';
import { SseSplitter } from '../src/continuation/sse.js';
import { StopScanner, Stitcher, heldBackText, withoutIds } from '../src/continuation/stitch.js';
import { deploymentView } from './static-pool.js';

const mock = deploymentView('m');

function plan(
  kind: 'chat' | 'completion',
  body: Record<string, unknown>,
  deployment = mock,
): ContinuablePlan {
  const p = planGeneration(kind, { model: 'm', ...body }, deployment, true);
  if (!p.continuable) throw new Error(`refused: ${p.reason}`);
  return p;
}

describe('planGeneration', () => {
  it('knows the generation routes', () => {
    expect(generationKind('/v1/chat/completions')).toBe('chat');
    expect(generationKind('/v1/completions?x=1')).toBe('completion');
    expect(generationKind('/v1/embeddings')).toBeUndefined();
  });

  it.each([
    ['chat', { stream: 'yes' }, 'invalid_request'],
    ['chat', { stream: true, stream_options: 'usage' }, 'invalid_request'],
    ['chat', { stream_options: { include_usage: true } }, 'invalid_request'],
    ['completion', { prompt: 'a', return_token_ids: 1 }, 'invalid_request'],
    ['chat', { n: 2 }, 'n'],
    ['completion', { prompt: 'a', best_of: 3 }, 'best_of'],
    ['completion', { prompt: 'a', use_beam_search: true }, 'beam_search'],
    ['chat', { response_format: { type: 'json_object' } }, 'structured_output'],
    ['chat', { guided_json: { type: 'object' } }, 'structured_output'],
    ['completion', { prompt: 'a', guided_regex: 'a+' }, 'structured_output'],
    ['completion', { prompt: 'a', echo: true }, 'echo'],
    ['completion', { prompt: 'a', prompt_logprobs: 1 }, 'prompt_logprobs'],
    ['chat', { tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
    ['completion', { prompt: ['a', 'b'] }, 'batch_prompt'],
    ['completion', { prompt: [[1, 2], [3]] }, 'batch_prompt'],
    ['completion', { prompt: 'a', suffix: 'z' }, 'suffix'],
    [
      'chat',
      { stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } },
      'continuous_usage',
    ],
  ] as const)('refuses %s %j: %s', (kind, body, reason) => {
    expect(planGeneration(kind, { model: 'm', ...body }, mock, true)).toEqual({
      continuable: false,
      reason,
    });
  });

  it('refuses chat on engines whose parser it cannot replay, SGLang, and when switched off', () => {
    const body = { model: 'm', messages: [] };
    const mistral = { ...mock, chatParsers: { reasoning: 'mistral' } };
    expect(planGeneration('chat', body, mistral, true)).toEqual({
      continuable: false,
      reason: 'parser',
    });
    // Completions are not parsed: they continue on the same deployment.
    expect(
      planGeneration('completion', { model: 'm', prompt: 'a' }, mistral, true).continuable,
    ).toBe(true);
    // SGLang streams chat without token ids: its parsed output cannot be continued from text.
    expect(
      planGeneration(
        'chat',
        body,
        { ...mock, engine: 'sglang', chatParsers: { reasoning: 'qwen3' } },
        true,
      ),
    ).toEqual({ continuable: false, reason: 'parser' });
    expect(planGeneration('chat', body, mock, false)).toEqual({
      continuable: false,
      reason: 'disabled',
    });
  });

  it('continues plain chat and completions (one prompt: text, one text in a list, or ids)', () => {
    for (const prompt of ['a', ['a'], [1, 2, 3]]) {
      expect(planGeneration('completion', { model: 'm', prompt }, mock, true).continuable).toBe(
        true,
      );
    }
    expect(plan('chat', { messages: [], n: 1, response_format: { type: 'text' } }).kind).toBe(
      'chat',
    );
  });

  it('asks the engine for a stream with token ids and usage, and remembers what the client asked', () => {
    const p = plan('chat', { messages: [], max_completion_tokens: 9, stop: 'x', min_tokens: 2 });
    expect(JSON.parse(p.upstreamBody.toString())).toEqual({
      model: 'm',
      messages: [],
      max_completion_tokens: 9,
      stop: 'x',
      min_tokens: 2,
      stream: true,
      stream_options: { include_usage: true },
      return_token_ids: true,
    });
    expect(p).toMatchObject({
      clientStream: false,
      clientTokenIds: false,
      clientUsage: false,
      maxTokens: 9,
      minTokens: 2,
      stop: ['x'],
      includeStopStr: false,
      inexact: [],
    });
    const q = plan('completion', {
      prompt: 'a',
      stream: true,
      stream_options: { include_usage: true },
      return_token_ids: true,
      logprobs: 2,
    });
    expect(q).toMatchObject({
      clientStream: true,
      clientTokenIds: true,
      clientUsage: true,
      logprobs: 2,
    });
  });

  it('counts parameters that cannot be carried exactly as inexact', () => {
    expect(plan('chat', { messages: [], presence_penalty: 0.5, seed: 1 }).inexact).toEqual([
      'penalties',
      'seeded_sampling',
    ]);
    // A seed at temperature 0 changes nothing.
    expect(plan('chat', { messages: [], seed: 1, temperature: 0 }).inexact).toEqual([]);
  });

  it('continues with prompt = prompt ids + generated ids and the limits reduced', () => {
    const p = plan('chat', {
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 10,
      min_tokens: 5,
      temperature: 0,
      top_p: 0.9,
      stop: ['END'],
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    });
    expect(JSON.parse(continuationBody(p, 'served', [1, 2], [7, 8, 9]).toString())).toEqual({
      model: 'served',
      prompt: [1, 2, 7, 8, 9],
      max_tokens: 7,
      min_tokens: 2,
      temperature: 0,
      top_p: 0.9,
      stop: ['END'],
      include_stop_str_in_output: true,
      logprobs: 2,
      stream: true,
      stream_options: { include_usage: true },
      return_token_ids: true,
    });
    // No limit given: the engine's default (the context length) still holds.
    const open = plan('completion', { prompt: 'a' });
    expect(JSON.parse(continuationBody(open, 'm', [1], [2]).toString())).not.toHaveProperty(
      'max_tokens',
    );
  });
});

describe('chatOutput', () => {
  const tools = [{ type: 'function', function: { name: 'f' } }];
  const on = (chatParsers: Record<string, unknown>) => ({ ...mock, chatParsers });
  it.each([
    ['no parser', {}, mock, undefined],
    ['gpt-oss', {}, on({ harmony: true }), { kind: 'harmony' }],
    ['gpt-oss with tools', { tools }, on({ harmony: true }), { kind: 'harmony' }],
    [
      "vLLM's Harmony parsers",
      { tools },
      on({ reasoning: 'openai_gptoss', tools: 'openai' }),
      { kind: 'harmony' },
    ],
    [
      'a <think> parser',
      {},
      on({ reasoning: 'deepseek_r1' }),
      { kind: 'tagged', reasoning: true, tools: false },
    ],
    [
      'qwen3 and hermes with tools',
      { tools },
      on({ reasoning: 'qwen3', tools: 'hermes' }),
      { kind: 'tagged', reasoning: true, tools: true },
    ],
    // The tool parser runs only when the request has tools and lets the model choose.
    ['hermes without tools', {}, on({ tools: 'hermes' }), undefined],
    [
      'hermes, tool_choice none',
      { tools, tool_choice: 'none' },
      on({ tools: 'hermes' }),
      undefined,
    ],
    [
      'hermes, tool_choice auto',
      { tools, tool_choice: 'auto' },
      on({ tools: 'hermes' }),
      { kind: 'tagged', reasoning: false, tools: true },
    ],
    [
      'tool_choice required (JSON-constrained)',
      { tools, tool_choice: 'required' },
      on({ tools: 'hermes' }),
      'tools',
    ],
    [
      'a named tool (JSON-constrained)',
      { tools, tool_choice: { type: 'function', function: { name: 'f' } } },
      on({ tools: 'hermes' }),
      'tools',
    ],
    ['legacy functions', { functions: [{ name: 'f' }] }, on({ tools: 'hermes' }), 'tools'],
    ['tools without a tool parser', { tools }, mock, 'tools'],
    ['a tool parser without a replay', { tools }, on({ tools: 'mistral' }), 'parser'],
    ['a reasoning parser without a replay', {}, on({ reasoning: 'granite' }), 'parser'],
  ] as const)('%s', (_, body, deployment, expected) => {
    expect(chatOutput({ model: 'm', messages: [], ...body }, deployment)).toEqual(expected);
  });

  it('asks a parsed continuation for the markers (skip_special_tokens false)', () => {
    const p = planGeneration('chat', { model: 'm', messages: [] }, on({ harmony: true }), true);
    expect(p).toMatchObject({ continuable: true, output: { kind: 'harmony' } });
    if (!p.continuable) return;
    const body = JSON.parse(continuationBody(p, 'm', [1], [2]).toString()) as Record<
      string,
      unknown
    >;
    expect(body.skip_special_tokens).toBe(false);
    const plain = planGeneration('chat', { model: 'm', messages: [] }, mock, true);
    if (!plain.continuable) throw new Error('plain chat is continuable');
    expect(JSON.parse(continuationBody(plain, 'm', [1], [2]).toString())).not.toHaveProperty(
      'skip_special_tokens',
    );
  });
});

describe('SseSplitter', () => {
  it('returns whole events only, across chunk boundaries and split characters', () => {
    const splitter = new SseSplitter();
    const bytes = Buffer.from('data: {"t":"é"}\n\ndata: [DONE]\n\n');
    const out: string[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...splitter.push(bytes.subarray(i, i + 1)));
    expect(out).toEqual(['{"t":"é"}', '[DONE]']);
    expect(splitter.buffered).toBe(0);
    expect(splitter.push(Buffer.from(': comment\n\ndata: a\r\ndata: b\r\n\r\n'))).toEqual([]);
    expect(splitter.buffered).toBeGreaterThan(0);
  });
});

describe('StopScanner', () => {
  it('holds back what could start a stop string and cuts before it', () => {
    const scanner = new StopScanner(['END'], false);
    expect(scanner.push('abcE')).toEqual({ out: 'ab' });
    expect(scanner.push('N')).toEqual({ out: 'c' });
    expect(scanner.push('Dxyz')).toEqual({ out: '', stop: 'END' });
  });

  it('keeps the stop string when asked and releases everything at the end', () => {
    const keep = new StopScanner(['END', 'X'], true);
    expect(keep.push('aXbEND')).toEqual({ out: 'aX', stop: 'X' });
    const none = new StopScanner(['END'], false);
    expect(none.push('abc')).toEqual({ out: 'a' });
    expect(none.flush()).toBe('bc');
    expect(new StopScanner([], false).push('abc')).toEqual({ out: 'abc' });
  });

  it('never splits a surrogate pair', () => {
    const scanner = new StopScanner(['xy'], false);
    expect(scanner.push('a🙂')).toEqual({ out: 'a' });
    expect(scanner.flush()).toBe('🙂');
  });
});

describe('heldBackText', () => {
  it('is the text of the ids the client has not received, without a partial character', () => {
    expect(heldBackText('hello wor', 'hello')).toBe(' wor');
    expect(heldBackText('caf\ufffd', 'caf')).toBe('');
    expect(heldBackText('ab', 'ab')).toBe('');
    expect(heldBackText('xb', 'ab')).toBeUndefined();
  });
});

describe('Stitcher', () => {
  const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    id: 'cmpl-1',
    object: 'text_completion',
    created: 5,
    model: 'm',
    choices: [{ index: 0, logprobs: null, finish_reason: null, stop_reason: null, ...choice }],
    ...extra,
  });
  const sse = (out: string) => JSON.parse(out.slice('data: '.length)) as Record<string, unknown>;

  it('splices a continuation into a completion stream, nulling the ids the client did not ask for', () => {
    const p = plan('completion', { prompt: 'a', stream: true, max_tokens: 4 });
    const s = new Stitcher(p);
    const first = s.accept(chunk({ text: 'x', prompt_token_ids: [1], token_ids: [10] }));
    expect(sse(first.out)).toMatchObject({
      choices: [{ text: 'x', prompt_token_ids: null, token_ids: null }],
    });
    expect(s.tracked).toBe(true);
    s.takeUp('x y');
    s.splice();
    const next = s.accept(
      chunk({ text: 'z', token_ids: [11] }, { id: 'cmpl-2', created: 9, model: 'other' }),
    );
    expect(sse(next.out)).toEqual(chunk({ text: ' yz', prompt_token_ids: null, token_ids: null }));
    const last = s.accept(chunk({ text: '!', token_ids: [12, 13], finish_reason: 'length' }));
    expect(last.finished).toBe(true);
    expect(s.ids).toEqual([10, 11, 12, 13]);
    expect(s.emitted).toBe('x yz!');
    expect(s.tokensLeft).toBe(0);
  });

  it('re-shapes a continuation as chat chunks and finds a stop string across the splice', () => {
    const p = plan('chat', { messages: [], stream: true, stop: ['END'], return_token_ids: true });
    const s = new Stitcher(p);
    s.accept({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 5,
      model: 'm',
      choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }],
      prompt_token_ids: [1, 2],
    });
    s.accept({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 5,
      model: 'm',
      choices: [{ index: 0, delta: { content: 'ab' }, finish_reason: null, token_ids: [3] }],
    });
    // The engine held back 'E' (it could start 'END'): the proxy receives it from /detokenize.
    s.takeUp('abE');
    s.splice();
    const next = s.accept(chunk({ text: 'ND and more', token_ids: [4, 5] }));
    expect(next).toMatchObject({ finished: true, abortUpstream: true });
    expect(sse(next.out)).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 5,
      model: 'm',
      choices: [
        {
          index: 0,
          delta: { content: '' },
          logprobs: null,
          finish_reason: 'stop',
          stop_reason: 'END',
          token_ids: [4, 5],
        },
      ],
    });
    expect(s.emitted).toBe('ab');
    expect(s.trailer()).toBe('data: [DONE]\n\n');
  });

  it('assembles the non-streaming response with usage over every worker', () => {
    const p = plan('chat', { messages: [] });
    const s = new Stitcher(p);
    s.accept({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 5,
      model: 'm',
      choices: [{ index: 0, delta: { role: 'assistant', content: 'hi' }, token_ids: [3] }],
      prompt_token_ids: [1, 2],
    });
    s.takeUp('hi');
    s.splice();
    s.accept(chunk({ text: ' there', token_ids: [4], finish_reason: 'stop' }));
    s.accept({
      ...chunk({}),
      choices: [],
      usage: { prompt_tokens: 3, total_tokens: 4, completion_tokens: 1 },
    });
    expect(s.assemble()).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 5,
      model: 'm',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'hi there', tool_calls: [] },
          logprobs: null,
          finish_reason: 'stop',
          stop_reason: null,
          token_ids: null,
        },
      ],
      usage: { prompt_tokens: 2, total_tokens: 4, completion_tokens: 2 },
      prompt_token_ids: null,
    });
  });

  it('shifts completion logprobs offsets and converts them for chat', () => {
    const p = plan('completion', { prompt: 'a', logprobs: 1 });
    const s = new Stitcher(p);
    s.accept(
      chunk({
        text: 'ab',
        prompt_token_ids: [1],
        token_ids: [2],
        logprobs: {
          text_offset: [0],
          token_logprobs: [-1],
          tokens: ['ab'],
          top_logprobs: [{ ab: -1 }],
        },
      }),
    );
    s.takeUp('abc');
    s.splice();
    s.accept(
      chunk({
        text: 'd',
        token_ids: [3],
        finish_reason: 'length',
        logprobs: {
          text_offset: [0],
          token_logprobs: [-2],
          tokens: ['cd'],
          top_logprobs: [{ cd: -2 }],
        },
      }),
    );
    // Non-streaming offsets: every token's decoded length from 0, as vLLM counts them.
    expect((s.assemble().choices as { logprobs: unknown }[])[0]!.logprobs).toEqual({
      text_offset: [0, 2],
      token_logprobs: [-1, -2],
      tokens: ['ab', 'cd'],
      top_logprobs: [{ ab: -1 }, { cd: -2 }],
    });
    const c = new Stitcher(
      plan('chat', { messages: [], logprobs: true, top_logprobs: 2, stream: true }),
    );
    c.accept({
      id: 'x',
      created: 1,
      model: 'm',
      choices: [{ index: 0, delta: { content: '' } }],
      prompt_token_ids: [1],
    });
    c.takeUp('');
    c.splice();
    const out = c.accept(
      chunk({
        text: '\ufffd',
        token_ids: [200],
        logprobs: {
          text_offset: [0],
          token_logprobs: [-0.5],
          tokens: ['\ufffd'],
          top_logprobs: [{ '\ufffd': -0.5 }],
        },
      }),
    );
    expect((sse(out.out).choices as { logprobs: unknown }[])[0]!.logprobs).toEqual({
      content: [
        {
          token: '\ufffd',
          logprob: -0.5,
          bytes: [0xef, 0xbf, 0xbd],
          top_logprobs: [{ token: '\ufffd', logprob: -0.5, bytes: [0xef, 0xbf, 0xbd] }],
        },
      ],
    });
    // Two candidates with the same text are one entry in completions' dict: inexact.
    expect([...c.inexact]).toEqual(['top_logprobs']);
  });
});

describe('withoutIds', () => {
  it('nulls the id fields in place, whatever the spacing, and nothing inside strings', () => {
    expect(
      withoutIds(
        '{"prompt_token_ids":[1,2],"choices":[{"delta":{"content":"a"},"token_ids":[3]}]}',
      ),
    ).toBe('{"prompt_token_ids":null,"choices":[{"delta":{"content":"a"},"token_ids":null}]}');
    expect(withoutIds('{"token_ids": [1, 2], "x": 1}')).toBe('{"token_ids": null, "x": 1}');
    const quoted = '{"text":"say \\"token_ids\\":[1] please","token_ids":[]}';
    expect(JSON.parse(withoutIds(quoted))).toEqual({
      text: 'say "token_ids":[1] please',
      token_ids: null,
    });
  });
});
