/**
 * The "done when": the README's run command (built scheduler, local backend, mock
 * engine scripted to emit Harmony tool calls) serves `scripts/generate-trajectories
 * --dataset sample --num-samples 3` end to end, with the web tools answered by local fake
 * Serper/Jina servers, and `scripts/load-test` against the same scheduler. Everything runs
 * as real child processes; the scheduler is stopped with SIGTERM at the end and must leave
 * no worker or engine behind.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  killStartedSchedulers,
  startSchedulerProcess,
  waitFor,
  type SchedulerProcess,
} from '../../apps/scheduler/test/harness.js';
import { startFakeTools, type FakeTools } from '../../packages/research/test/fake-tools.js';
import { processesMentioning } from './processes.js';

const run = promisify(execFile);
// The README's run command, with one 8-GPU instance.
const RUN_FLAGS =
  '--backend local --engine mock --model mock-model --max-nodes 1 --tensor-parallel-size 8'.split(
    ' ',
  );
const root = resolve(import.meta.dirname, '../..');
const script = join(root, 'packages/research/mock/research-script.json');

interface Message {
  role: string;
  content: string;
  name?: string;
  tool_calls?: { function: { name: string; arguments: string } }[];
}

interface Trajectory {
  id: string;
  question: string;
  status: string;
  answer: string | null;
  model: string;
  messages: Message[];
  raw: string;
  toolCalls: number;
  usage: { promptTokens: number; completionTokens: number };
  errors: unknown[];
}

const dir = mkdtempSync(join(tmpdir(), 'es-traj-e2e-'));
let scheduler: SchedulerProcess;
let tools: FakeTools;

beforeAll(async () => {
  tools = await startFakeTools();
  scheduler = await startSchedulerProcess({
    logDir: join(dir, 'logs'),
    port: await freePort(),
    args: [
      ...RUN_FLAGS,
      '--scheduler-id',
      `e2e${Math.random().toString(36).slice(2, 8)}`,
      `--engine-extra-args=--script ${script} --max-model-len 131072`,
      ...'--node-acquire-interval 1 --health-check-interval 1 --heartbeat-timeout 5'.split(' '),
    ],
  });
  await waitFor(
    'a ready worker',
    () => scheduler.get<{ ready_workers: number }>('/health'),
    (health) => health.ready_workers >= 1,
    30_000,
  );
});

afterAll(async () => {
  await killStartedSchedulers();
  await tools?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('scripts against the README run command (local backend, scripted mock engine)', () => {
  it('generate-trajectories writes 3 trajectories with two tool calls and a final answer each', async () => {
    const out = join(dir, 'out');
    const { stderr } = await run(
      join(root, 'scripts/generate-trajectories'),
      [
        '--scheduler-url',
        scheduler.url,
        '--dataset',
        'sample',
        '--num-samples',
        '3',
        '--output-dir',
        out,
        '--serper-url',
        tools.url,
        '--jina-url',
        tools.url,
        // mock-model has no chat template anywhere: the bundled test one, asked for by name.
        '--chat-template',
        'bundled-test',
      ],
      {
        // No ./.env in the temp dir: the keys come from here only.
        cwd: dir,
        env: { ...process.env, SERPER_API_KEY: 'serper-test', JINA_API_KEY: 'jina-test' },
        timeout: 60_000,
      },
    );
    expect(stderr).toContain('3 trajectories written');

    const lines = readFileSync(join(out, 'trajectories.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(3);
    const trajectories = lines.map((line) => JSON.parse(line) as Trajectory);
    expect(new Set(trajectories.map((t) => t.id)).size).toBe(3);
    for (const t of trajectories) {
      expect(t).toMatchObject({ status: 'completed', model: 'mock-model', toolCalls: 2 });
      expect(t.errors).toEqual([]);
      expect(t.answer).toContain("mock engine's final answer");
      expect(t.messages.map((m) => m.role).join(' ')).toBe(
        'system user assistant tool assistant tool assistant',
      );
      expect(t.messages[1]?.content).toBe(t.question);
      const calls = t.messages.flatMap((m) => m.tool_calls ?? []).map((c) => c.function);
      expect(calls).toEqual([
        { name: 'search', arguments: '{"query": "research question"}' },
        { name: 'open_url', arguments: '{"url": "https://example.org/a"}' },
      ]);
      // The fake services' answers reached the model as tool messages.
      expect(t.messages[3]).toMatchObject({ role: 'tool', name: 'search' });
      expect(t.messages[3]?.content).toContain('About research question');
      expect(t.messages[5]).toMatchObject({ role: 'tool', name: 'open_url' });
      expect(t.messages[5]?.content).toContain('The page text');
      expect(t.messages[6]?.content).toBe(t.answer);
      expect(t.raw).toContain('<|start|>functions.open_url to=assistant');
      expect(t.usage.promptTokens).toBeGreaterThan(0);
      expect(t.usage.completionTokens).toBeGreaterThan(0);
    }

    // Each trajectory searched once (Serper key header) and read one page (Jina bearer).
    const searches = tools.requests.filter((r) => r.method === 'POST' && r.path === '/search');
    const reads = tools.requests.filter((r) => r.path === '/https://example.org/a');
    expect(searches).toHaveLength(3);
    expect(searches.every((r) => r.headers['x-api-key'] === 'serper-test')).toBe(true);
    expect(reads).toHaveLength(3);
    expect(reads.every((r) => r.headers.authorization === 'Bearer jina-test')).toBe(true);

    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      written: number;
      toolCalls: number;
      toolErrors: number;
      byStatus: Record<string, number>;
    };
    expect(summary).toMatchObject({ written: 3, toolCalls: 6, toolErrors: 0 });
    expect(summary.byStatus.completed).toBe(3);
  });

  it('load-test reports every request ok, with latency and TTFT, as JSON', async () => {
    const { stdout } = await run(
      join(root, 'scripts/load-test'),
      [
        '--scheduler-url',
        scheduler.url,
        '--concurrency',
        '4',
        '--requests',
        '20',
        '--prompt-tokens',
        '32',
        '--max-tokens',
        '16',
        '--json',
      ],
      { cwd: dir, timeout: 60_000 },
    );
    const report = JSON.parse(stdout) as {
      config: { model: string; baseURL: string; stream: boolean };
      requests: { total: number; ok: number; failed: number };
      throughput: { requestsPerSecond: number; outputTokensPerSecond: number };
      tokens: { completion: number };
      latencyMs: { p50: number; p99: number };
      ttftMs: { p50: number };
      errors: Record<string, number>;
    };
    expect(report.config).toMatchObject({
      model: 'mock-model',
      baseURL: `${scheduler.url}/v1`,
      stream: true,
    });
    expect(report.requests).toEqual({ total: 20, ok: 20, failed: 0 });
    expect(report.errors).toEqual({});
    expect(report.tokens.completion).toBeGreaterThan(0);
    expect(report.throughput.requestsPerSecond).toBeGreaterThan(0);
    expect(report.latencyMs.p50).toBeGreaterThan(0);
    expect(report.latencyMs.p99).toBeGreaterThanOrEqual(report.latencyMs.p50);
    expect(report.ttftMs.p50).toBeGreaterThan(0);
    expect(report.ttftMs.p50).toBeLessThanOrEqual(report.latencyMs.p50);
  });

  it('SIGTERM stops the scheduler with exit 0 and no worker or engine left running', async () => {
    const before = processesMentioning(dir);
    expect(before.some((p) => p.args.includes('apps/worker/dist/cli.mjs'))).toBe(true);
    expect(before.some((p) => p.args.includes('mock-engine'))).toBe(true);
    const exit = await scheduler.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    await waitFor(
      'no process of ours',
      () => processesMentioning(dir),
      (l) => l.length === 0,
      15_000,
    );
  });
});
