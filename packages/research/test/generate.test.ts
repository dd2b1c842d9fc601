import { execFile } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import OpenAI from 'openai';
import { BUNDLED_TEMPLATE_DIR, loadChatTemplate } from '../src/chat-template.js';
import { generateTrajectories } from '../src/generate.js';
import { HARMONY_STOP } from '../src/harmony.js';
import { createWebTools } from '../src/tools.js';
import { runTrajectory } from '../src/trajectory.js';
import type { GenerateOptions } from '../src/generate.js';
import type { Trajectory } from '../src/trajectory.js';
import { expectedGeneration } from '@es/mock-engine';
import type { ScriptRule } from '@es/mock-engine';
import { generateOptions } from './generate-options.js';
import { startMock } from './mock.js';
import type { MockEngine } from './mock.js';
import { defaultAnswer, startFakeTools } from './fake-tools.js';
import type { FakeTools } from './fake-tools.js';

const run = promisify(execFile);
const REPO = join(import.meta.dirname, '..', '..', '..');
const RESEARCH_SCRIPT = join(import.meta.dirname, '..', 'mock', 'research-script.json');

const call = (name: string, args: string) =>
  `<|channel|>commentary to=functions.${name} <|constrain|>json<|message|>${args}<|call|>`;
const final = (answer: string) => `<|channel|>final<|message|>${answer}<|return|>`;

// Questions with a marker get their own behaviour; the first matching rule wins, so each
// scenario lists its later conversation states first.
const rules: ScriptRule[] = [
  // A final answer forced on the last turn (the prompt ends with an opened final message).
  { match: '<\\|channel\\|>final<\\|message\\|>$', response: 'Forced final answer.<|return|>' },
  { match: 'not valid JSON', response: final('Recovered after fixing the arguments.') },
  { match: 'BROKEN JSON', response: call('search', '{"query": "unterminated') },
  { match: 'search failed', response: final('Answered without search.') },
  { match: 'TOOL ERROR', response: call('search', '{"query": "tool error please"}') },
  {
    match: 'RUN OUT',
    response: '<|channel|>analysis<|message|>thinking and thinking',
    finishReason: 'length',
  },
  // The shipped script for the sample dataset: search, open the first result, answer.
  ...(JSON.parse(await readFile(RESEARCH_SCRIPT, 'utf8')) as ScriptRule[]),
];

let engine: MockEngine;
let tools: FakeTools;
beforeAll(async () => {
  engine = await startMock({ script: rules });
  tools = await startFakeTools((request) =>
    request.body.includes('tool error')
      ? { status: 500, body: 'search backend down' }
      : defaultAnswer(request),
  );
});
afterAll(async () => {
  await engine?.close();
  await tools?.close();
});

async function dataset(questions: object[]): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'es-gen-')), 'questions.jsonl');
  await writeFile(path, questions.map((q) => JSON.stringify(q)).join('\n'));
  return path;
}

async function readTrajectories(dir: string): Promise<Trajectory[]> {
  const text = await readFile(join(dir, 'trajectories.jsonl'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Trajectory);
}

function options(over: Partial<GenerateOptions>): GenerateOptions {
  return generateOptions(engine.url, tools.url, over);
}

describe('generateTrajectories against the mock engine and fake tools', () => {
  test('writes a trajectory with two tool calls and a final answer', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([
      { id: 'pa', question: 'Who proposed PagedAttention?', answer: 'Kwon et al.' },
    ]);
    const summary = await generateTrajectories(options({ dataset: path, outputDir }));
    expect(summary).toMatchObject({ model: 'mock-model', written: 1, toolCalls: 2, toolErrors: 0 });

    const [t] = await readTrajectories(outputDir);
    expect(t).toMatchObject({
      id: 'pa',
      question: 'Who proposed PagedAttention?',
      reference: 'Kwon et al.',
      model: 'mock-model',
      status: 'completed',
      answer: expect.stringContaining("mock engine's final answer"),
      toolCalls: 2,
      errors: [],
    });
    expect(t?.messages.map((m) => m.role)).toEqual([
      'system',
      'user',
      'assistant',
      'tool',
      'assistant',
      'tool',
      'assistant',
    ]);
    expect(t?.messages[2]).toEqual({
      role: 'assistant',
      content: '',
      thinking: 'I need sources for this question; search the web first.',
      tool_calls: [
        {
          id: 'call_1',
          type: 'function',
          function: { name: 'search', arguments: '{"query": "research question"}' },
        },
      ],
    });
    expect(t?.messages[3]).toMatchObject({ role: 'tool', tool_call_id: 'call_1', name: 'search' });
    expect(t?.messages[3]?.content).toContain('[1] About research question');
    expect(t?.messages[4]?.tool_calls?.[0]?.function).toEqual({
      name: 'open_url',
      arguments: '{"url": "https://example.org/a"}',
    });
    expect(t?.messages[5]?.content).toContain('# Page https://example.org/a');
    expect(t?.messages[6]).toMatchObject({
      role: 'assistant',
      thinking: expect.stringContaining('The page answers'),
    });
    expect(t?.raw.startsWith('<|start|>system<|message|>')).toBe(true);
    expect(t?.raw).toContain(
      '<|start|>functions.open_url to=assistant<|channel|>commentary<|message|># Page',
    );
    expect(t?.raw.endsWith('final answer.<|return|>')).toBe(true);
    expect(t?.turns).toHaveLength(3);
    expect(t?.turns.map((turn) => turn.tool)).toEqual(['search', 'open_url', undefined]);
    expect(t?.usage.promptTokens).toBeGreaterThan(0);
    expect(t?.usage.totalTokens).toBe(
      (t?.usage.promptTokens ?? 0) + (t?.usage.completionTokens ?? 0),
    );
    expect(Date.parse(t?.timings.finishedAt ?? '')).toBeGreaterThanOrEqual(
      Date.parse(t?.timings.startedAt ?? ''),
    );

    // What the engine saw on the third turn: the template's rendering of both tool results.
    const last = t?.raw ?? '';
    expect(last).toContain('type search = ');
    expect(last).toContain(
      'to=functions.search <|constrain|>json<|message|>{"query": "research question"}<|call|>',
    );
    expect(last).toContain(
      '<|start|>functions.search to=assistant<|channel|>commentary<|message|>',
    );
  });

  test('malformed tool-call JSON becomes a tool message the model recovers from', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'bj', question: 'BROKEN JSON question' }]);
    await generateTrajectories(options({ dataset: path, outputDir }));
    const [t] = await readTrajectories(outputDir);
    expect(t?.status).toBe('completed');
    expect(t?.answer).toBe('Recovered after fixing the arguments.');
    const toolMessage = t?.messages.find((m) => m.role === 'tool');
    expect(toolMessage?.content).toMatch(
      /^Error: the arguments are not valid JSON \(.+\)\. Call search again with a JSON object as arguments\.$/,
    );
    expect(t?.errors).toEqual([
      expect.objectContaining({ turn: 1, type: 'invalid_arguments', tool: 'search' }),
    ]);
  });

  test('a failing tool becomes a tool message, not a crash', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'te', question: 'TOOL ERROR question' }]);
    const summary = await generateTrajectories(options({ dataset: path, outputDir }));
    const [t] = await readTrajectories(outputDir);
    expect(t?.answer).toBe('Answered without search.');
    expect(t?.messages.find((m) => m.role === 'tool')?.content).toMatch(
      /^Error: search failed: .* answered HTTP 500: search backend down$/,
    );
    expect(summary.toolErrors).toBe(1);
  });

  test('a completion cut by max_tokens ends the trajectory as truncated', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'ro', question: 'RUN OUT question' }]);
    await generateTrajectories(options({ dataset: path, outputDir }));
    const [t] = await readTrajectories(outputDir);
    expect(t).toMatchObject({
      status: 'truncated',
      answer: null,
      errors: [expect.objectContaining({ type: 'truncated' })],
    });
  });

  test('the last turn forces a final answer instead of running the tool the model asked for', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'mt', question: 'Anything?' }]);
    const before = tools.requests.length;
    const summary = await generateTrajectories(options({ dataset: path, outputDir, maxTurns: 2 }));
    const [t] = await readTrajectories(outputDir);
    // Turn 2 asked for open_url: not run; the analysis before it is kept, the answer forced.
    expect(t).toMatchObject({ status: 'completed', toolCalls: 1, answer: 'Forced final answer.' });
    expect(t?.messages.map((m) => m.role)).toEqual([
      'system',
      'user',
      'assistant',
      'tool',
      'assistant',
    ]);
    expect(t?.messages.at(-1)).toEqual({
      role: 'assistant',
      content: 'Forced final answer.',
      thinking: 'The first result looks relevant; read it.',
    });
    expect(t?.turns.map((turn) => [turn.turn, turn.tool, turn.forcedFinal])).toEqual([
      [1, 'search', undefined],
      [2, undefined, undefined],
      [2, undefined, true],
    ]);
    expect(t?.raw).toContain(
      '<|start|>assistant<|channel|>analysis<|message|>The first result looks relevant; read it.<|end|>' +
        '<|start|>assistant<|channel|>final<|message|>Forced final answer.<|return|>',
    );
    expect(t?.raw).not.toContain('to=functions.open_url');
    // The tool the model asked for on the last turn never ran.
    expect(tools.requests.slice(before).map((r) => r.method)).toEqual(['POST']);
    expect(summary.byStatus).toMatchObject({ completed: 1, max_turns: 0 });
  });

  test('--max-tool-calls forces the answer after that many calls', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'tc', question: 'Anything?' }]);
    await generateTrajectories(options({ dataset: path, outputDir, maxToolCalls: 1 }));
    const [t] = await readTrajectories(outputDir);
    expect(t).toMatchObject({ status: 'completed', toolCalls: 1, answer: 'Forced final answer.' });
  });

  test('with --no-force-final-answer, --max-turns stops a trajectory that keeps calling tools', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const path = await dataset([{ id: 'mt', question: 'Anything?' }]);
    await generateTrajectories(
      options({ dataset: path, outputDir, maxTurns: 2, forceFinalAnswer: false }),
    );
    const [t] = await readTrajectories(outputDir);
    expect(t).toMatchObject({ status: 'max_turns', toolCalls: 2, answer: null });
    expect(t?.errors.at(-1)?.message).toMatch(/raise --max-turns/);
  });

  test('a second identical run continues the output; --overwrite starts again', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    await generateTrajectories(options({ numSamples: 2, outputDir }));
    const again = await generateTrajectories(options({ numSamples: 2, outputDir }));
    expect(again).toMatchObject({ selected: 2, skipped: 2, written: 0 });
    // A crash left half a line behind: it is ignored and its question runs again.
    await writeFile(join(outputDir, 'trajectories.jsonl'), '{"id": "half', { flag: 'a' });
    const summary = await generateTrajectories(options({ numSamples: 3, outputDir }));
    expect(summary).toMatchObject({ selected: 3, skipped: 2, written: 1 });
    const lines = (await readFile(join(outputDir, 'trajectories.jsonl'), 'utf8'))
      .trim()
      .split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[2]).toBe('{"id": "half');
    const ids = [lines[0], lines[1], lines[3]].map(
      (line) => (JSON.parse(line ?? '') as Trajectory).id,
    );
    expect(new Set(ids).size).toBe(3);

    const fresh = await generateTrajectories(
      options({ numSamples: 2, outputDir, overwrite: true }),
    );
    expect(fresh).toMatchObject({ skipped: 0, written: 2 });
    expect(await readTrajectories(outputDir)).toHaveLength(2);
  });
});

describe('scripts/generate-trajectories (the built CLI as a child process)', () => {
  const script = join(REPO, 'scripts', 'generate-trajectories');

  test('--dataset sample --num-samples 3 writes 3 valid trajectories and a summary', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-cli-'));
    const { stderr } = await run(
      script,
      [
        '--scheduler-url',
        engine.url,
        '--dataset',
        'sample',
        '--num-samples',
        '3',
        '--concurrency',
        '2',
        '--output-dir',
        outputDir,
        '--serper-url',
        tools.url,
        '--jina-url',
        tools.url,
        '--env-file',
        '/dev/null',
        '--chat-template',
        'bundled-test',
      ],
      { env: { ...process.env, SERPER_API_KEY: 'cli-key', JINA_API_KEY: 'jina-cli-key' } },
    );
    const trajectories = await readTrajectories(outputDir);
    expect(trajectories).toHaveLength(3);
    for (const t of trajectories) {
      expect(t).toMatchObject({ status: 'completed', toolCalls: 2, errors: [] });
      expect(t.answer).toContain("mock engine's final answer");
    }
    expect(stderr).toContain(`3 trajectories written to ${join(outputDir, 'trajectories.jsonl')}`);
    expect(stderr).toContain('completed 3, max turns 0');
    expect(stderr).toContain(
      `model mock-model, chat template ${join(BUNDLED_TEMPLATE_DIR, 'chat_template.jinja')}`,
    );
    expect(JSON.parse(await readFile(join(outputDir, 'summary.json'), 'utf8'))).toMatchObject({
      written: 3,
      toolCalls: 6,
    });
    expect(tools.requests.some((r) => r.headers['x-api-key'] === 'cli-key')).toBe(true);
    expect(tools.requests.some((r) => r.headers.authorization === 'Bearer jina-cli-key')).toBe(
      true,
    );
  });

  test('a bad flag exits 2 with a message naming it', async () => {
    const failure = await run(script, ['--concurrency', '0']).catch((error: unknown) => error);
    expect(failure).toMatchObject({
      code: 2,
      stderr:
        'generate-trajectories: --concurrency must be an integer >= 1 (got 0); for example --concurrency 8\n',
    });
  });
});

describe('long and interrupted runs', () => {
  test('requests leave no abort listeners behind on the signal (long runs would leak)', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    const controller = new AbortController();
    const trajectory = await runTrajectory({
      client: new OpenAI({ baseURL: `${engine.url}/v1`, apiKey: 'EMPTY' }),
      model: 'mock-model',
      template: await loadChatTemplate(BUNDLED_TEMPLATE_DIR),
      tools: createWebTools({
        serperApiKey: 'k',
        serperBaseUrl: tools.url,
        jinaApiKey: 'j',
        jinaBaseUrl: tools.url,
      }),
      id: 'leak',
      question: 'Anything?',
      signal: controller.signal,
    });
    expect(trajectory.turns).toHaveLength(3);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);

    const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
    const summary = await generateTrajectories(
      options({ numSamples: 20, concurrency: 12, outputDir, signal: controller.signal }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    expect(summary.written).toBe(20);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
  });

  test('an interrupt keeps what was written valid, and the next run finishes the rest', async () => {
    const slow = await startMock({ script: rules, tokensPerSecond: 1000 });
    try {
      const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
      const controller = new AbortController();
      // Interrupt as soon as the first trajectory is reported, mid-way through the second.
      const log = new PassThrough();
      log.on('data', (chunk: Buffer) => {
        if (chunk.toString().startsWith('[1/5]')) controller.abort();
      });
      const first = await generateTrajectories(
        options({
          schedulerUrl: slow.url,
          numSamples: 5,
          concurrency: 1,
          outputDir,
          log,
          signal: controller.signal,
        }),
      );
      expect(first).toMatchObject({ interrupted: true, written: 1 });
      expect(await readTrajectories(outputDir)).toHaveLength(first.written);

      const second = await generateTrajectories(
        options({ schedulerUrl: slow.url, numSamples: 5, concurrency: 2, outputDir }),
      );
      expect(second).toMatchObject({ skipped: 1, written: 4, interrupted: false });
      const ids = (await readTrajectories(outputDir)).map((t) => t.id);
      expect(new Set(ids).size).toBe(5);
    } finally {
      await slow.close();
    }
  });
});

/**
 * What the mock engine counts in each turn of `t`: the ids of the prompt the turn sent (the
 * conversation so far, rendered as generate-trajectories renders it) and the pieces of the
 * scripted answer, both by @es/mock-engine's own tokenizer and generation.
 */
async function turnTokens(t: Trajectory): Promise<{ prompt: number; completion: number }[]> {
  const template = await loadChatTemplate(BUNDLED_TEMPLATE_DIR);
  const definitions = createWebTools({ serperApiKey: 'k' }).map((tool) => tool.definition);
  return t.turns.map((_, i) => {
    // Turn i + 1 sees the system prompt, the question, and a call and its result per turn before.
    const prompt = template.render({
      messages: t.messages.slice(0, 2 + 2 * i),
      tools: definitions,
      addGenerationPrompt: true,
    });
    const generation = expectedGeneration(
      { kind: 'completion', prompt },
      { maxTokens: 4096, stop: HARMONY_STOP, script: rules },
    );
    return { prompt: generation.promptTokens, completion: generation.completionTokens };
  });
}

/** Runs one question with room to spare; returns its trajectory and its turns' token counts. */
async function roomyRun(question: object, over: Partial<GenerateOptions> = {}) {
  const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
  await generateTrajectories(options({ dataset: await dataset([question]), outputDir, ...over }));
  const [t] = await readTrajectories(outputDir);
  if (t === undefined) throw new Error('no trajectory written');
  const counts = await turnTokens(t);
  // The engine counted each prompt as its tokenizer does.
  expect(t.turns.map((turn) => turn.promptTokens)).toEqual(counts.map((c) => c.prompt));
  return { t, counts };
}

/** The trajectory's smallest useful completion (MIN_COMPLETION_TOKENS in trajectory.ts). */
const MIN_COMPLETION_TOKENS = 16;

describe('the model context length', () => {
  test('a max_tokens that no longer fits is lowered to what the context has room for', async () => {
    const question = { id: 'ctx', question: 'Who proposed PagedAttention?' };
    const roomy = await roomyRun(question);
    expect(roomy.t.status).toBe('completed');
    // Room for the largest turn and its answer, far less than the 4096 max_tokens asked for.
    const maxModelLen = Math.max(...roomy.counts.map((c) => c.prompt + c.completion)) + 64;
    const small = await startMock({ script: rules, maxModelLen });
    try {
      const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
      await generateTrajectories(
        options({
          schedulerUrl: small.url,
          dataset: await dataset([question]),
          outputDir,
          maxTokens: 4096,
        }),
      );
      const [t] = await readTrajectories(outputDir);
      expect(t?.status).toBe('completed');
      expect(t?.turns.map((turn) => turn.promptTokens)).toEqual(roomy.counts.map((c) => c.prompt));
      for (const turn of t?.turns ?? []) {
        expect(turn.maxTokens).toBe(maxModelLen - turn.promptTokens);
      }
    } finally {
      await small.close();
    }
  });

  test('a conversation that outgrows the context ends as context_full', async () => {
    const bigPages = await startFakeTools((request) =>
      request.method === 'GET' ? { body: 'word '.repeat(2_000) } : defaultAnswer(request),
    );
    const bigTools = {
      tools: {
        serperApiKey: 'k',
        serperBaseUrl: bigPages.url,
        jinaApiKey: 'j',
        jinaBaseUrl: bigPages.url,
      },
    };
    const question = { id: 'big', question: 'Who proposed PagedAttention?' };
    let small: MockEngine | undefined;
    try {
      const roomy = await roomyRun(question, bigTools);
      expect(roomy.t).toMatchObject({ status: 'completed', toolCalls: 2 });
      const [first, second, third] = roomy.counts;
      if (!first || !second || !third) throw new Error('expected three turns');
      // Room for the first two turns; the page opened in the second leaves the third too little.
      const maxModelLen =
        Math.max(first.prompt + first.completion, second.prompt + second.completion) + 64;
      expect(third.prompt).toBeGreaterThan(maxModelLen - MIN_COMPLETION_TOKENS);
      small = await startMock({ script: rules, maxModelLen });
      const outputDir = await mkdtemp(join(tmpdir(), 'es-out-'));
      const summary = await generateTrajectories(
        options({
          schedulerUrl: small.url,
          dataset: await dataset([question]),
          outputDir,
          ...bigTools,
        }),
      );
      const [t] = await readTrajectories(outputDir);
      expect(t).toMatchObject({ status: 'context_full', answer: null, toolCalls: 2 });
      expect(t?.errors.at(-1)).toMatchObject({
        turn: 3,
        type: 'context_full',
        message:
          `the prompt has ${third.prompt} tokens, the model's context ${maxModelLen}: ` +
          'lower --tool-result-max-chars or --max-turns',
      });
      expect(summary.byStatus.context_full).toBe(1);
    } finally {
      await small?.close();
      await bigPages.close();
    }
  });
});
