import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  BUNDLED_TEMPLATE_DIR,
  createChatTemplate,
  loadChatTemplate,
} from '../src/chat-template.js';
import { ResearchError } from '../src/errors.js';
import { createWebTools } from '../src/tools.js';
import type { ChatMessage } from '../src/types.js';

const MODEL_DIR = join(import.meta.dirname, 'fixtures', 'model-dir');
const tools = createWebTools().map((tool) => tool.definition);

const conversation: ChatMessage[] = [
  { role: 'system', content: 'Cite sources.' },
  { role: 'user', content: 'Who proposed PagedAttention?' },
  {
    role: 'assistant',
    content: '',
    thinking: 'I should search.',
    tool_calls: [
      {
        id: 'call_1',
        type: 'function',
        function: { name: 'search', arguments: '{"query":"PagedAttention"}' },
      },
    ],
  },
  { role: 'tool', tool_call_id: 'call_1', name: 'search', content: '[1] vLLM paper' },
];

describe('the bundled Harmony-style template', () => {
  test('renders instructions, tool definitions, a tool call, its result and the generation prompt', async () => {
    const template = await loadChatTemplate(BUNDLED_TEMPLATE_DIR);
    const prompt = template.render({
      messages: conversation,
      tools,
      addGenerationPrompt: true,
      reasoningEffort: 'high',
    });
    expect(prompt.startsWith('<|start|>system<|message|>')).toBe(true);
    expect(prompt).toContain('Reasoning: high');
    expect(prompt).toContain('<|start|>developer<|message|># Instructions\n\nCite sources.');
    expect(prompt).toContain('type search = (_: {"type": "object"');
    expect(prompt).toContain('type open_url = ');
    expect(prompt).toContain(
      '<|start|>assistant<|channel|>analysis<|message|>I should search.<|end|>' +
        '<|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json' +
        '<|message|>{"query": "PagedAttention"}<|call|>' +
        '<|start|>functions.search to=assistant<|channel|>commentary<|message|>[1] vLLM paper<|end|>',
    );
    expect(prompt.endsWith('<|end|><|start|>assistant')).toBe(true);
  });

  test('renders a final answer, no developer block without instructions or tools, and no generation prompt', async () => {
    const template = await loadChatTemplate(BUNDLED_TEMPLATE_DIR);
    const prompt = template.render({
      messages: [
        { role: 'user', content: 'Capital of France?' },
        { role: 'assistant', content: 'Paris.' },
      ],
    });
    expect(prompt).not.toContain('developer');
    expect(prompt).toContain('Reasoning: medium');
    expect(prompt.endsWith('<|start|>assistant<|channel|>final<|message|>Paris.<|end|>')).toBe(
      true,
    );
  });

  test('passes JSON-object arguments to the template as objects and malformed ones as written', async () => {
    const template = await loadChatTemplate(BUNDLED_TEMPLATE_DIR);
    const withArguments = (args: string) =>
      template.render({
        messages: [
          { role: 'user', content: 'q' },
          {
            role: 'assistant',
            content: '',
            tool_calls: [
              { id: 'c', type: 'function', function: { name: 'search', arguments: args } },
            ],
          },
        ],
      });
    expect(withArguments('{"query":"a","n":2}')).toContain(
      '<|message|>{"query": "a", "n": 2}<|call|>',
    );
    expect(withArguments('{"query": "unterminated')).toContain(
      '<|message|>{"query": "unterminated<|call|>',
    );
  });

  test('raises a template_render error for a role it does not know', async () => {
    const template = await loadChatTemplate(BUNDLED_TEMPLATE_DIR);
    const render = () =>
      template.render({
        messages: [
          { role: 'user', content: 'a' },
          { role: 'developer', content: 'b' },
        ],
      });
    expect(render).toThrow(ResearchError);
    expect(render).toThrow(/does not support the role "developer"/);
  });
});

describe('loadChatTemplate on model directories', () => {
  test('takes tokenizer_config.json\'s named "tool_use" template and its special tokens', async () => {
    const template = await loadChatTemplate(MODEL_DIR);
    expect(template.source).toBe(join(MODEL_DIR, 'tokenizer_config.json'));
    const prompt = template.render({
      messages: conversation.slice(1, 3),
      tools,
      addGenerationPrompt: true,
      reasoningEffort: 'low',
    });
    expect(prompt).toBe(
      '<s>[tools] search,open_url\n' +
        '[user] Who proposed PagedAttention?\n' +
        '[assistant] <call search {"query": "PagedAttention"}>\n' +
        '[assistant effort=low]',
    );
  });

  test('takes another named template when asked', async () => {
    const template = await loadChatTemplate(MODEL_DIR, { name: 'default' });
    expect(template.render({ messages: [{ role: 'user', content: 'hi' }] })).toBe('<s>[user] hi\n');
  });

  test('prefers chat_template.jinja over tokenizer_config.json, and accepts a string chat_template', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'es-template-'));
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ eos_token: '</s>', chat_template: 'config:{{ messages[0].content }}' }),
    );
    expect(
      (await loadChatTemplate(dir)).render({ messages: [{ role: 'user', content: 'x' }] }),
    ).toBe('config:x');
    await writeFile(
      join(dir, 'chat_template.jinja'),
      'jinja:{{ messages[0].content }}{{ eos_token }}',
    );
    expect(
      (await loadChatTemplate(dir)).render({ messages: [{ role: 'user', content: 'x' }] }),
    ).toBe('jinja:x</s>');
  });

  test('says where it looked when a directory has no template', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'es-template-'));
    await expect(loadChatTemplate(dir)).rejects.toMatchObject({
      code: 'template_not_found',
      param: 'tokenizer',
      message: expect.stringContaining('chat_template.jinja'),
    });
    await expect(loadChatTemplate(MODEL_DIR, { name: 'rag' })).rejects.toThrow(
      /no chat template named "rag" \(it has: default, tool_use\)/,
    );
  });

  test('reports a template that does not parse', () => {
    expect(() => createChatTemplate('{% for %}')).toThrow(/cannot parse chat template inline/);
  });
});
