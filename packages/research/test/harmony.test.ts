import { describe, expect, test } from 'vitest';
import {
  finalAnswerPrefill,
  interpretCompletion,
  parseHarmony,
  parseToolArguments,
} from '../src/harmony.js';
import { parseContextLengthError } from '../src/trajectory.js';

describe('parseHarmony', () => {
  test('splits analysis and a tool call addressed after the channel', () => {
    const text =
      '<|channel|>analysis<|message|>Need sources.<|end|>' +
      '<|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"query":"x"}';
    expect(parseHarmony(text)).toEqual([
      { role: 'assistant', channel: 'analysis', content: 'Need sources.', complete: true },
      {
        role: 'assistant',
        channel: 'commentary',
        recipient: 'functions.search',
        contentType: 'json',
        content: '{"query":"x"}',
        complete: true,
      },
    ]);
  });

  test('reads a recipient written in the role header and a bare content type', () => {
    const [message] = parseHarmony(
      ' to=functions.open_url<|channel|>commentary json<|message|>{}<|call|>',
    );
    expect(message).toMatchObject({
      recipient: 'functions.open_url',
      channel: 'commentary',
      contentType: 'json',
      content: '{}',
    });
  });

  test('treats text without Harmony headers as one channel-less message', () => {
    expect(parseHarmony('Just an answer.')).toEqual([
      { role: 'assistant', content: 'Just an answer.', complete: true },
    ]);
  });

  test('marks a header cut off before <|message|> as incomplete', () => {
    expect(parseHarmony('<|channel|>final')).toEqual([
      { role: 'assistant', channel: 'final', content: '', complete: false },
    ]);
  });
});

describe('interpretCompletion', () => {
  test.each([
    {
      name: 'a tool call with its thinking',
      text: '<|channel|>analysis<|message|>Search first.<|end|><|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"query":"vllm"}',
      finish: 'stop',
      expected: {
        kind: 'tool_call',
        thinking: 'Search first.',
        recipient: 'functions.search',
        name: 'search',
        arguments: '{"query":"vllm"}',
      },
    },
    {
      name: 'a final answer',
      text: '<|channel|>analysis<|message|>Done.<|end|><|start|>assistant<|channel|>final<|message|>Paris.',
      finish: 'stop',
      expected: { kind: 'final', thinking: 'Done.', answer: 'Paris.' },
    },
    {
      name: 'plain text as the final answer',
      text: 'Paris.',
      finish: 'stop',
      expected: { kind: 'final', thinking: '', answer: 'Paris.' },
    },
    {
      name: 'a cut-off completion',
      text: '<|channel|>analysis<|message|>Thinking for a long',
      finish: 'length',
      expected: { kind: 'incomplete', thinking: 'Thinking for a long', reason: 'length' },
    },
    {
      name: 'analysis that stops with neither call nor answer',
      text: '<|channel|>analysis<|message|>Hmm.',
      finish: 'stop',
      expected: { kind: 'incomplete', thinking: 'Hmm.', reason: 'no_answer' },
    },
    {
      name: 'a builtin recipient outside functions',
      text: '<|channel|>commentary to=browser.search<|message|>{}',
      finish: 'stop',
      expected: {
        kind: 'tool_call',
        thinking: '',
        recipient: 'browser.search',
        name: 'browser.search',
        arguments: '{}',
      },
    },
  ])('$name', ({ text, finish, expected }) => {
    expect(interpretCompletion(text, finish)).toEqual(expected);
  });
});

describe('parseToolArguments', () => {
  test('accepts an object and an empty string', () => {
    expect(parseToolArguments('{"query": "a"}')).toEqual({ ok: true, value: { query: 'a' } });
    expect(parseToolArguments('  ')).toEqual({ ok: true, value: {} });
  });

  test('explains malformed JSON and non-objects in words the model can act on', () => {
    const broken = parseToolArguments('{"query": "a"');
    expect(broken.ok).toBe(false);
    expect(!broken.ok && broken.error).toMatch(/not valid JSON/);
    expect(parseToolArguments('["a"]')).toEqual({
      ok: false,
      error: 'the arguments must be a JSON object',
    });
  });
});

describe('finalAnswerPrefill', () => {
  test('keeps the analysis before a tool call and opens a final message instead of the call', () => {
    expect(
      finalAnswerPrefill(
        '<|channel|>analysis<|message|>Read it.<|end|><|start|>assistant<|channel|>commentary ' +
          'to=functions.open_url <|constrain|>json<|message|>{"url": "https://a.example"}',
      ),
    ).toBe(
      '<|channel|>analysis<|message|>Read it.<|end|><|start|>assistant<|channel|>final<|message|>',
    );
    // A call without analysis: the open assistant header gets the final channel directly.
    expect(finalAnswerPrefill('<|channel|>commentary to=functions.search<|message|>{}')).toBe(
      '<|channel|>final<|message|>',
    );
  });
});

describe('parseContextLengthError', () => {
  test.each([
    [
      "This model's maximum context length is 4096 tokens. However, you requested 4400 tokens (304 in the messages, 4096 in the completion). Please reduce the length of the messages or completion.",
      { maxContext: 4096, promptTokens: 304 },
    ],
    [
      "'max_tokens' is too large: 4096. This model's maximum context length is 8192 tokens and your request has 5000 input tokens (4096 > 8192 - 5000).",
      { maxContext: 8192, promptTokens: 5000 },
    ],
    ['model "x" not found', undefined],
  ])('%s', (message, expected) => {
    expect(parseContextLengthError(message)).toEqual(expected);
  });
});
