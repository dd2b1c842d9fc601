/**
 * The hand-over on the local backend (the embedded default), through the scheduler's own
 * wiring: a job preempted (or cancelled by a scale-down or a drain: the same SIGTERM) with a
 * stream in flight hands its generation over at the workers' --drain-grace −
 * --handover-margin (15 − 5 s), while its engine still runs. Before the local provider's
 * SIGTERM → SIGKILL grace was raised to SLURM's KillWait (30 s), its 5 s cut the worker's
 * drain, engines included, long before the hand-over. The proxy continues the handed-over
 * generation on another worker: the client gets all of it.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolEvent } from '@es/pool';
import { startAdminTestScheduler, until, type AdminTestScheduler } from './admin-harness.js';
// What the engine answers (see local.e2e.test.ts for why the source is imported directly).
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

let s: AdminTestScheduler;

beforeAll(async () => {
  s = await startAdminTestScheduler({
    maxNodes: 2,
    engineExtraArgs: '--ttft 0 --tokens-per-second 20',
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

describe('hand-over of a preempted local job', () => {
  it('comes 10 s after the preemption and reaches onWorkerLost, before the job is killed', async () => {
    const { registry } = s.scheduler;
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));
    const lost: [string, string][] = [];
    registry.onWorkerLost((id, reason) => lost.push([id, reason]));
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const content = 'a long story, please';
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content }],
      max_tokens: 300,
      temperature: 0,
      stream: true,
    });
    let chunks = 0;
    let text = '';
    const reading = (async () => {
      for await (const chunk of stream) {
        chunks += 1;
        text += chunk.choices[0]?.delta.content ?? '';
      }
    })();

    const serving = await until(
      () =>
        chunks >= 3
          ? registry.workers('mock').find((w) => w.state === 'ready' && w.inFlight > 0)
          : undefined,
      20_000,
      'the worker serving the stream',
    );
    const preemptedAt = Date.now();
    expect(s.preempt(serving.jobId)).toBe(true);
    const handover = await until(
      () => events.find((e) => e.type === 'hand-over' && e.workerId === serving.id),
      25_000,
      'the hand-over of the preempted worker',
    );
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
