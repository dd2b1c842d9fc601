/**
 * The client's side of a parsed chat generation across a cut (pure): whatever the cut,
 * the client ends with the whole answer's reasoning, content and tool calls, each once.
 */
import { describe, expect, it } from 'vitest';
import { createOutputParser, type ChatOutputFormat } from '../src/continuation/output-parser.js';
import { ParsedChat } from '../src/continuation/parsed-chat.js';

const HARMONY: ChatOutputFormat = { kind: 'harmony' };
const TAGGED: ChatOutputFormat = { kind: 'tagged', reasoning: true, tools: true };

const harmonyAnswer =
  '<|channel|>analysis<|message|>Think about the café.<|end|>' +
  '<|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json<|message|>' +
  '{"query":"日本 🙂"}<|call|>';
const taggedAnswer =
  '<think>\nweigh a < b\n</think>\n\nSo: <tool_call>\n{"name": "search", "arguments": {"q": "naïve"}}\n</tool_call>';

/** What the engine sent before the cut: its parser's deltas, as the wire carries them. */
function engineDeltas(format: ChatOutputFormat, raw: string): Record<string, unknown>[] {
  const parser = createOutputParser(format, () => 'call-engine');
  const delta = parser.push(raw);
  const chat = new ParsedChat(format);
  return [chat.wireDelta(delta)];
}

function uncut(format: ChatOutputFormat, raw: string) {
  const parser = createOutputParser(format, () => 'x');
  parser.push(raw);
  parser.finish();
  return parser.released;
}

describe('ParsedChat across a cut at every character', () => {
  for (const [name, format, answer] of [
    ['harmony', HARMONY, harmonyAnswer],
    ['<think> and hermes', TAGGED, taggedAnswer],
  ] as const) {
    it(`${name}: the client gets the uncut answer, each part once, what the engine held back too`, () => {
      const whole = uncut(format, answer);
      expect(whole.toolCalls).toHaveLength(1);
      // The engine sent all it had parsed, or held its last 3 characters back.
      for (
        let k = 0, lag = 0;
        k <= answer.length;
        lag = lag === 0 ? 3 : 0, k += lag === 0 ? 1 : 0
      ) {
        const chat = new ParsedChat(format);
        const sent = answer.slice(0, Math.max(0, k - lag));
        for (const delta of engineDeltas(format, sent)) chat.receive(delta);
        expect(chat.splice(answer.slice(0, k)), `k=${k}`).toBe(true);
        // The rest arrives in two chunks, the generation ending with the second.
        const middle = k + Math.floor((answer.length - k) / 2);
        chat.continue(answer.slice(k, middle), false);
        chat.continue(answer.slice(middle), true);
        expect(chat.received, `k=${k}`).toEqual(whole);
      }
    });
  }

  it('a text end the parser holds back (a `<`) that the engine had sent: not sent twice', () => {
    const format: ChatOutputFormat = { kind: 'tagged', reasoning: false, tools: true };
    const chat = new ParsedChat(format);
    // The engine's markers are single tokens: it sent `<` as content at once.
    chat.receive({ content: 'if a <' });
    expect(chat.splice('if a <')).toBe(true);
    const next = chat.continue(' b then', false);
    expect(next.content).toBe(' b then');
    chat.continue('', true);
    expect(chat.received.content).toBe('if a < b then');
  });

  it('a client that received something else: a mismatch, and the output goes on', () => {
    const chat = new ParsedChat(HARMONY);
    chat.receive({ reasoning: 'other' });
    expect(chat.splice('<|channel|>analysis<|message|>Think')).toBe(false);
  });

  it('keeps the engine tool call id and field names; a new call gets its own id', () => {
    const chat = new ParsedChat(TAGGED);
    chat.receive({ reasoning_content: '\nhm\n' });
    chat.receive({ content: '\n\n' });
    chat.receive({
      tool_calls: [
        { index: 0, id: 'call-1', type: 'function', function: { name: 'a', arguments: '' } },
      ],
    });
    chat.receive({ tool_calls: [{ index: 0, function: { arguments: '{"x": ' } }] });
    const raw = '<think>\nhm\n</think>\n\n<tool_call>\n{"name": "a", "arguments": {"x": ';
    expect(chat.splice(raw)).toBe(true);
    const rest = chat.continue(
      '1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>',
      true,
    );
    const wire = chat.wireDelta(rest);
    expect(wire).toMatchObject({
      tool_calls: [
        { index: 0, function: { arguments: '1}' } },
        { index: 1, type: 'function', function: { name: 'b', arguments: '{}' } },
      ],
    });
    expect((wire.tool_calls as { id?: string }[])[1]!.id).toMatch(/^chatcmpl-tool-[0-9a-f]{32}$/);
    expect(chat.calledTools).toBe(true);
    const message = chat.message('assistant');
    expect(message).toMatchObject({
      role: 'assistant',
      content: '\n\n',
      reasoning_content: '\nhm\n',
      tool_calls: [
        { id: 'call-1', type: 'function', function: { name: 'a', arguments: '{"x": 1}' } },
        { type: 'function', function: { name: 'b', arguments: '{}' } },
      ],
    });
  });
});
