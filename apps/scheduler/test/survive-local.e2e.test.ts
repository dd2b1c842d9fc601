/**
 * Generations that survive their worker on the local backend (the embedded default), through
 * the scheduler's own wiring (real es-worker processes, real mock engines). The hand-over: a job preempted (or cancelled by a scale-down or a drain: the same SIGTERM) with a
 * stream in flight hands its generation over at the workers' --drain-grace −
 * --handover-margin (15 − 5 s), while its engine still runs. Before the local provider's
 * SIGTERM → SIGKILL grace was raised to SLURM's KillWait (30 s), its 5 s cut the worker's
 * drain, engines included, long before the hand-over. The proxy continues the handed-over
 * generation on another worker: the client gets all of it. And a worker's process groups
 * SIGKILLed mid-stream: the client still gets the uncut generation, with no error; the
 * continuation is an event naming both workers and a metric.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOB_KEY_ENV } from '@es/local';
import type { PoolEvent } from '@es/pool';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  metric,
  scrape,
  startAdminTestScheduler,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';
import { environValue, processesWithEnv } from './harness.js';
// What the engine answers (see local.e2e.test.ts for why the source is imported directly).
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

let s: AdminTestScheduler;

beforeAll(async () => {
  s = await startAdminTestScheduler({
    maxNodes: 2,
    engineExtraArgs: '--ttft 0 --tokens-per-second 20',
  });
  await until(fourReady, 60_000, '4 ready workers');
}, 90_000);

const fourReady = () =>
  s.scheduler.registry.workers('mock').filter((w) => w.state === 'ready').length === 4
    ? true
    : undefined;

afterAll(() => s?.close());

/**
 * The worker serving the test's stream, the one its response names, once `started`. (Not
 * "the worker with a request in flight": the registry's in-flight counts include es-proxy's
 * reports, which lag by up to 1 s, so a first attempt refused by a just-ready worker and
 * retried elsewhere still shows on that worker meanwhile; landing proofs preempted such a
 * worker, which had nothing to hand over.)
 */
function servingWorker(id: string | null, started: () => boolean) {
  return until(
    () => (started() ? s.scheduler.registry.workers('mock').find((w) => w.id === id) : undefined),
    25_000,
    `the worker serving the stream (${id})`,
  );
}

describe('hand-over of a preempted local job', () => {
  it('comes 10 s after the preemption and reaches onWorkerLost, before the job is killed', async () => {
    const { registry } = s.scheduler;
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));
    const lost: [string, string][] = [];
    registry.onWorkerLost((id, reason) => lost.push([id, reason]));
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const content = 'a long story, please';
    const { data: stream, response } = await client.chat.completions
      .create({
        model: 'mock-model',
        messages: [{ role: 'user', content }],
        max_tokens: 300,
        temperature: 0,
        stream: true,
      })
      .withResponse();
    const servingId = response.headers.get('x-elastic-selected-worker-id');
    let chunks = 0;
    let text = '';
    const reading = (async () => {
      for await (const chunk of stream) {
        chunks += 1;
        text += chunk.choices[0]?.delta.content ?? '';
      }
    })();

    const serving = await servingWorker(servingId, () => chunks >= 3);
    const preemptedAt = Date.now();
    expect(s.preempt(serving.jobId)).toBe(true);
    const handover = await until(
      () => events.find((e) => e.type === 'hand-over' && e.workerId === serving.id),
      25_000,
      'the hand-over of the preempted worker',
    ).catch((error: unknown) => {
      // What the preempted job's worker said, so that a miss can be read from the failure.
      const log = readdirSync(s.logDir)
        .filter((name) => name.endsWith(`-${serving.jobId}.out`))
        .map((name) => readFileSync(join(s.logDir, name), 'utf8'))
        .join('');
      throw new Error(`${String(error)}\nworker log of job ${serving.jobId}:\n${log}`);
    });
    const after = handover.at - preemptedAt;
    expect(after).toBeGreaterThanOrEqual(10_000);
    expect(after).toBeLessThan(15_000);
    // Announced while the worker was draining, before it was gone.
    const draining = events.find((e) => e.type === 'draining' && e.workerId === serving.id);
    expect(draining?.at ?? Infinity).toBeLessThanOrEqual(handover.at);
    // The job is listed COMPLETING from the SIGTERM on, and the reconciler takes its workers
    // gone (without a loss: they were draining); the hand-over still reaches the proxy.
    expect(lost).toContainEqual([serving.id, expect.stringMatching(/^hand-over: SIGTERM/)]);
    expect(handover.reason).toMatch(/^SIGTERM \(engines stop in \d+ ms\)$/);
    // The proxy continued the generation on another worker: the client has all of it, once.
    await reading;
    const expected = expectedGeneration(
      { kind: 'chat', messages: [{ role: 'user', content }] },
      { maxTokens: 300 },
    );
    expect(text).toBe(expected.text);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'continuation',
        workerId: serving.id,
        reason: expect.stringMatching(/\(hand-over\): continued on /),
      }),
    );
  }, 60_000);
});

const messages = [{ role: 'user' as const, content: 'tell me about elastic clusters' }];
const MAX = 150;

describe('a worker process group SIGKILLed mid-stream', () => {
  it('leaves the client with the whole, uncut generation', async () => {
    const { registry } = s.scheduler;
    // The preempted job of the test above has been replaced: all 4 ready again.
    await until(fourReady, 60_000, '4 ready workers');
    const continuedBefore = metric(await scrape(s), 'es_continuations_total', {
      deployment: 'mock',
      outcome: 'continued',
    });
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const { data: stream, response } = await client.chat.completions
      .create({
        model: 'mock-model',
        messages,
        max_tokens: MAX,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const servingId = response.headers.get('x-elastic-selected-worker-id');
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

    const serving = await servingWorker(servingId, () => chunks >= 20);
    // Every process of the local job (the worker, and the engines it started) carries the
    // job's key; SIGKILL the process group of each, as a node crash does. (Not by SLURM_JOB_ID:
    // local job ids are 1, 2, … in every scheduler, and another test file's local jobs run
    // beside this one; CI once SIGKILLed those.)
    const jobKey = environValue(serving.pid ?? 0, JOB_KEY_ENV);
    expect(jobKey).toBeTypeOf('string');
    const groups = new Set(
      processesWithEnv(JOB_KEY_ENV, jobKey ?? '').map((p) =>
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
    const continued = async () =>
      metric(await scrape(s), 'es_continuations_total', {
        deployment: 'mock',
        outcome: 'continued',
      });
    expect(await continued()).toBe(continuedBefore + 1);
  }, 60_000);
});
