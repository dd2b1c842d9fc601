/**
 * Generations that survive their worker, through the scheduler's own wiring on the local
 * backend (real es-worker processes, real mock engines): the worker's whole process group
 * is SIGKILLed while a stream is in flight, and the client still gets the uncut generation —
 * the engine's own definition of it — with no error; the continuation is an event naming both
 * workers and a metric.
 */
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolEvent } from '@es/pool';
import {
  metric,
  scrape,
  startAdminTestScheduler,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';
import { processesWithEnv } from './harness.js';
// What the engine answers (see local.e2e.test.ts for why the source is imported directly).
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

let s: AdminTestScheduler;

beforeAll(async () => {
  s = await startAdminTestScheduler({
    maxNodes: 2,
    engineExtraArgs: '--ttft 0 --tokens-per-second 25',
  });
  await until(
    () =>
      s.scheduler.registry.workers('mock').filter((w) => w.state === 'ready').length === 4
        ? true
        : undefined,
    60_000,
    '4 ready workers',
  );
}, 90_000);

afterAll(() => s?.close());

const messages = [{ role: 'user' as const, content: 'tell me about elastic clusters' }];
const MAX = 150;

describe('a worker process group SIGKILLed mid-stream', () => {
  it('leaves the client with the whole, uncut generation', async () => {
    const { registry } = s.scheduler;
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages,
      max_tokens: MAX,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    const reading = (async () => {
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        text += choice?.delta.content ?? '';
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (chunk.usage) usage = chunk.usage;
        chunks += 1;
      }
    })();

    const serving = await until(
      () =>
        chunks >= 20
          ? registry.workers('mock').find((w) => w.state === 'ready' && w.inFlight > 0)
          : undefined,
      20_000,
      'the worker serving the stream',
    );
    // The local job's processes carry its id as SLURM_JOB_ID, as on a cluster; SIGKILL the
    // process group of each (the worker, and the engines it started), as a node crash does.
    const groups = new Set(
      processesWithEnv('SLURM_JOB_ID', serving.jobId).map((p) =>
        Number(execFileSync('ps', ['-o', 'pgid=', '-p', String(p.pid)], { encoding: 'utf8' })),
      ),
    );
    expect(groups.size).toBeGreaterThan(0);
    for (const group of groups) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await reading;

    const expected = expectedGeneration(
      { kind: 'chat', messages: [{ role: 'user', content: messages[0]!.content }] },
      { maxTokens: MAX },
    );
    expect(text).toBe(expected.text);
    expect(finish).toBe(expected.finishReason);
    expect(usage).toMatchObject({
      prompt_tokens: expected.promptTokens,
      completion_tokens: expected.completionTokens,
    });
    const continuation = events.find((e) => e.type === 'continuation');
    expect(continuation).toMatchObject({ workerId: serving.id });
    expect(continuation?.reason).toMatch(
      new RegExp(`cut on ${serving.id.replaceAll('.', '\\.')} after \\d+ tokens .*: continued on `),
    );
    const body = await scrape(s);
    expect(
      metric(body, 'es_continuations_total', { deployment: 'mock', outcome: 'continued' }),
    ).toBe(1);
  }, 60_000);
});
