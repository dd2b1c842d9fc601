/**
 * What users of the original tool (scripts/generate_trajectories.py) expect of
 * generate-trajectories: its record shape with `--format seed`, its flag names, resuming by
 * default, and the wait for ready workers before the first trajectory.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ScriptRule } from '@es/mock-engine';
import { generateTrajectories } from '../src/generate.js';
import type { GenerateOptions } from '../src/generate.js';
import { formatSearchResults } from '../src/tools.js';
import { DEFAULT_SYSTEM_PROMPT } from '../src/trajectory.js';
import { startFakeScheduler, clusterStatus } from './fake-scheduler.js';
import type { FakeScheduler } from './fake-scheduler.js';
import { searchResponse, startFakeTools } from './fake-tools.js';
import type { FakeTools } from './fake-tools.js';
import { generateOptions } from './generate-options.js';
import { startMock } from './mock.js';
import type { MockEngine } from './mock.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'generate-trajectories');
const RESEARCH_SCRIPT = join(import.meta.dirname, '..', 'mock', 'research-script.json');

const rules: ScriptRule[] = [
  {
    match: 'RUN OUT',
    response: '<|channel|>analysis<|message|>thinking and thinking',
    finishReason: 'length',
  },
  ...(JSON.parse(await readFile(RESEARCH_SCRIPT, 'utf8')) as ScriptRule[]),
];

/** The original's record fields, in its order of description (README, issue 20). */
const SEED_FIELDS = [
  'qid',
  'question',
  'messages',
  'answer',
  'reasoning',
  'answer_ref',
  'num_rounds',
  'num_tool_calls',
  'tool_calls',
  'latency_s',
  'status',
];

const SEARCH_TEXT = formatSearchResults(
  'research question',
  JSON.parse(searchResponse('research question')),
);
const PAGE_TEXT = '# Page https://example.org/a\n\nThe page text.';
const ANSWER =
  "According to the sources found (https://example.org/a), this is the mock engine's final answer.";

let engine: MockEngine;
let tools: FakeTools;
beforeAll(async () => {
  engine = await startMock({ script: rules });
  tools = await startFakeTools();
});
afterAll(async () => {
  await engine?.close();
  await tools?.close();
});

async function questions(name: string, entries: object[]): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'es-seed-')), name);
  await writeFile(path, entries.map((q) => JSON.stringify(q)).join('\n'));
  return path;
}

async function readLines(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function options(over: Partial<GenerateOptions>): GenerateOptions {
  return generateOptions(engine.url, tools.url, over);
}

describe('generate-trajectories --format seed (the original record shape)', () => {
  test('the CLI with the seed flag names appends one record per question to trajectories_<dataset>.jsonl, field by field', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-seed-out-'));
    const dataset = await questions('browsecomp.jsonl', [
      { qid: 7, question: 'Who proposed PagedAttention?', answer: 'Kwon et al.' },
      { id: 'ro', question: 'RUN OUT question' },
    ]);
    await run(
      SCRIPT,
      [
        '--scheduler-url',
        engine.url,
        '--dataset',
        dataset,
        '--num-samples',
        '2',
        '--concurrency',
        '2',
        '--max-rounds',
        '15',
        '--max-gen-tokens',
        '8192',
        '--max-tool-calls',
        '10',
        '--format',
        'seed',
        '--output-dir',
        outputDir,
        '--chat-template',
        'bundled-test',
        '--serper-url',
        tools.url,
        '--jina-url',
        tools.url,
        '--env-file',
        '/dev/null',
      ],
      { env: { ...process.env, SERPER_API_KEY: 's', JINA_API_KEY: 'j' } },
    );
    const records = await readLines(join(outputDir, 'trajectories_browsecomp.jsonl'));
    expect(records).toHaveLength(2);
    const ok = records.find((r) => r.qid === 7);
    const failed = records.find((r) => r.qid === 'ro');

    expect(Object.keys(ok ?? {})).toEqual(SEED_FIELDS);
    expect(ok).toEqual({
      qid: 7,
      question: 'Who proposed PagedAttention?',
      messages: [
        { role: 'system', content: DEFAULT_SYSTEM_PROMPT },
        { role: 'user', content: 'Who proposed PagedAttention?' },
        {
          role: 'assistant',
          content: '',
          reasoning_content: 'I need sources for this question; search the web first.',
          tool_calls: [
            {
              id: 'call_1',
              type: 'function',
              function: { name: 'search', arguments: '{"query": "research question"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: SEARCH_TEXT },
        {
          role: 'assistant',
          content: '',
          reasoning_content: 'The first result looks relevant; read it.',
          tool_calls: [
            {
              id: 'call_2',
              type: 'function',
              function: { name: 'open_url', arguments: '{"url": "https://example.org/a"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_2', content: PAGE_TEXT },
        {
          role: 'assistant',
          content: ANSWER,
          reasoning_content: 'The page answers the question; I can write the answer now.',
        },
      ],
      answer: ANSWER,
      reasoning: 'The page answers the question; I can write the answer now.',
      answer_ref: 'Kwon et al.',
      num_rounds: 3,
      num_tool_calls: 2,
      tool_calls: [
        {
          round: 1,
          tool: 'search',
          args: { query: 'research question' },
          result_len: SEARCH_TEXT.length,
        },
        {
          round: 2,
          tool: 'open_url',
          args: { url: 'https://example.org/a' },
          result_len: PAGE_TEXT.length,
        },
      ],
      latency_s: expect.any(Number),
      status: 'success',
    });
    expect(ok?.latency_s).toBeGreaterThan(0);
    expect(ok?.latency_s).toBeLessThan(60);

    expect(Object.keys(failed ?? {})).toEqual([...SEED_FIELDS, 'error']);
    expect(failed).toEqual({
      qid: 'ro',
      question: 'RUN OUT question',
      messages: [
        { role: 'system', content: DEFAULT_SYSTEM_PROMPT },
        { role: 'user', content: 'RUN OUT question' },
      ],
      answer: '',
      reasoning: '',
      answer_ref: '',
      num_rounds: 1,
      num_tool_calls: 0,
      tool_calls: [],
      latency_s: expect.any(Number),
      status: 'error',
      error: 'truncated: the completion reached max_tokens (8192); raise --max-tokens',
    });
  });

  test('a second identical run skips the answered questions, runs the errors again and appends', async () => {
    const outputDir = await mkdtemp(join(tmpdir(), 'es-seed-out-'));
    const dataset = await questions('mixed.jsonl', [
      { id: 1, question: 'Who proposed PagedAttention?' },
      { id: 2, question: 'RUN OUT question' },
    ]);
    const path = join(outputDir, 'trajectories_mixed.jsonl');
    const first = await generateTrajectories(options({ dataset, outputDir, format: 'seed' }));
    expect(first).toMatchObject({ outputPath: path, written: 2, skipped: 0 });
    const second = await generateTrajectories(options({ dataset, outputDir, format: 'seed' }));
    expect(second).toMatchObject({ written: 1, skipped: 1 });
    const lines = await readLines(path);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ qid: 2, status: 'error' });
    expect(lines.filter((r) => r.qid === 1)).toHaveLength(1);
    // No failed.jsonl in the seed format: errors are lines of the output.
    await expect(readFile(join(outputDir, 'failed.jsonl'), 'utf8')).rejects.toMatchObject({
      code: 'ENOENT',
    });
    const fresh = await generateTrajectories(
      options({ dataset, outputDir, format: 'seed', overwrite: true }),
    );
    expect(fresh).toMatchObject({ written: 2, skipped: 0 });
    expect(await readLines(path)).toHaveLength(2);
  });

  test('an engine failure is a record with status "error" and the engine\'s message', async () => {
    const failing = await startMock({ script: rules, failRate: 1 });
    try {
      const outputDir = await mkdtemp(join(tmpdir(), 'es-seed-out-'));
      const summary = await generateTrajectories(
        options({
          schedulerUrl: failing.url,
          numSamples: 1,
          outputDir,
          format: 'seed',
          maxRetries: 0,
        }),
      );
      expect(summary).toMatchObject({ written: 1, failed: 1 });
      const [record] = await readLines(join(outputDir, 'trajectories_sample.jsonl'));
      expect(Object.keys(record ?? {})).toEqual([...SEED_FIELDS, 'error']);
      expect(record).toMatchObject({
        messages: [{ role: 'system' }, { role: 'user' }],
        answer: '',
        num_rounds: 1,
        num_tool_calls: 0,
        tool_calls: [],
        status: 'error',
        error: expect.stringMatching(/^failed: 500 /),
      });
      expect(typeof record?.qid).toBe('string');
    } finally {
      await failing.close();
    }
  });
});

describe('waiting for ready workers (the original polled /cluster_status)', () => {
  let scheduler: FakeScheduler | undefined;
  afterAll(async () => scheduler?.close());

  test('no completion is sent before a worker is ready; one progress line per check', async () => {
    scheduler = await startFakeScheduler(engine.url, (call) =>
      call <= 3 ? clusterStatus(0, 2) : clusterStatus(1, 1),
    );
    const outputDir = await mkdtemp(join(tmpdir(), 'es-wait-'));
    const log = new PassThrough();
    const lines: string[] = [];
    log.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
    const summary = await generateTrajectories(
      options({
        schedulerUrl: scheduler.url,
        numSamples: 1,
        outputDir,
        log,
        waitIntervalMs: 50,
        waitTimeoutMs: 10_000,
      }),
    );
    expect(summary.written).toBe(1);
    const waiting = lines.filter((l) => l.startsWith('waiting for ready workers:'));
    expect(waiting).toHaveLength(3);
    expect(waiting[0]).toMatch(
      /^waiting for ready workers: 0 ready, 2 loading, 0 offline workers, 1 pending jobs \(0 s of 10 s\)$/,
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^cluster: 1 ready workers serving mock-model \(after \d+\.\d s\)$/),
    );
    const completions = scheduler.forwarded.filter((f) => f.path === '/v1/completions');
    expect(completions.length).toBe(3);
    for (const c of completions) expect(c.afterStatusCalls).toBe(4);
  });

  test('when no worker becomes ready in time, the run stops with a clear error and writes nothing', async () => {
    await scheduler?.close();
    scheduler = await startFakeScheduler(engine.url, () => clusterStatus(0, 1));
    const outputDir = await mkdtemp(join(tmpdir(), 'es-wait-'));
    const started = Date.now();
    await expect(
      generateTrajectories(
        options({
          schedulerUrl: scheduler.url,
          outputDir,
          waitIntervalMs: 100,
          waitTimeoutMs: 1_000,
        }),
      ),
    ).rejects.toMatchObject({
      code: 'workers_not_ready',
      param: 'wait-timeout',
      message:
        `no ready worker at ${scheduler.url} after 1 s (last check: 0 ready, 1 loading, 0 ` +
        "offline workers, 1 pending jobs). See the scheduler's log or `scripts/es status`; " +
        'raise --wait-timeout to wait longer',
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(scheduler.forwarded.filter((f) => f.path === '/v1/completions')).toHaveLength(0);
    await expect(readFile(join(outputDir, 'trajectories.jsonl'), 'utf8')).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });
});
