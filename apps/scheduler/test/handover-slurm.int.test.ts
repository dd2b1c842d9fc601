/**
 * A long generation survives a real preemption with a GraceTime (issue 13): the scheduler's
 * own wiring on the SLURM dev cluster (partition `low`, GraceTime set to 25 s for this file),
 * workers at their defaults (--drain-grace 15, --handover-margin 5), a mock engine at 10
 * tokens/s. A stream of 250 tokens (25 s) is started through /v1 with the official `openai`
 * client; a `high` job then preempts the node serving it. The node's worker drains, hands the
 * generation over 10 s later (before SLURM's kill at 25 s) and the proxy continues it on the
 * other node: the client gets the whole generation, no error.
 *
 * The hand-over is this file's to prove (the `hand-over` event of the preempted worker, while
 * its job still runs); the continuation is the proxy's: the stream's assertions pass once the
 * proxy continues generations cut on a worker.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { PoolEvent } from '@es/pool';
import { cancelByNamePrefix, preempt, runSlurm } from '../../../packages/testkit/src/index.js';
import { startAdminTestScheduler, until, type AdminTestScheduler } from './admin-harness.js';

process.env.SLURM_CONF = inject('slurmConf');
const SID = `hov${Math.random().toString(36).slice(2, 8)}`;
const GRACE_TIME_S = 25;
let s: AdminTestScheduler;
let graceTimeBefore = '0';

async function scontrol(...argv: string[]): Promise<string> {
  const result = await runSlurm('scontrol', argv);
  if (result.exitCode !== 0) throw new Error(`scontrol ${argv.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

beforeAll(async () => {
  graceTimeBefore = /GraceTime=(\d+)/.exec(await scontrol('show', 'partition', 'low'))?.[1] ?? '0';
  await scontrol('update', 'partitionname=low', `GraceTime=${GRACE_TIME_S}`);
  s = await startAdminTestScheduler({
    backend: 'slurm',
    maxNodes: 2,
    schedulerId: SID,
    engineExtraArgs: '--ttft 0 --tokens-per-second 10',
  });
  await until(
    () => {
      const ready = s.scheduler.registry.workers('mock').filter((w) => w.state === 'ready');
      return ready.length === 4 ? true : undefined;
    },
    150_000,
    '4 ready workers on 2 nodes',
  );
}, 180_000);

afterAll(async () => {
  await s?.close();
  await cancelByNamePrefix(`es-${SID}-`);
  await cancelByNamePrefix(`${SID}-preempt`);
  await scontrol('update', 'partitionname=low', `GraceTime=${graceTimeBefore}`);
});

describe('a long stream across a preemption with GraceTime', () => {
  it('is handed over before SLURM kills the node and reaches the client whole', async () => {
    const { registry } = s.scheduler;
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));
    const lost: [string, string][] = [];
    registry.onWorkerLost((id, reason) => lost.push([id, reason]));

    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'a long story, please' }],
      max_tokens: 250,
      stream: true,
    });
    let text = '';
    let chunks = 0;
    let finish: string | null | undefined;
    const reading = (async () => {
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? '';
        chunks += 1;
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
    })();
    const error = reading.then(
      () => undefined,
      (e: unknown) => e,
    );

    // The worker serving it, and its node.
    const serving = await until(
      () =>
        chunks >= 3
          ? registry.workers('mock').find((w) => w.state === 'ready' && w.inFlight > 0)
          : undefined,
      30_000,
      'the worker serving the stream',
    );
    const jobId = serving.jobId;
    const node = serving.node;
    const preemptedAt = Date.now();
    await preempt(node, 60, `${SID}-preempt`);

    expect(await error).toBeUndefined();
    // The hand-over of the preempted worker: after its drain, within the worker's drain grace
    // less the margin (10 s, plus the drain notice and a busy machine's slack), before SLURM's
    // kill at GraceTime.
    const handover = events.find((e) => e.type === 'hand-over' && e.workerId === serving.id);
    expect(
      handover,
      JSON.stringify(events.map((e) => [e.type, e.workerId, e.reason])),
    ).toBeDefined();
    const after = (handover?.at ?? 0) - preemptedAt;
    expect(after).toBeGreaterThanOrEqual(10_000);
    expect(after).toBeLessThan(GRACE_TIME_S * 1000);
    const draining = events.find((e) => e.type === 'draining' && e.workerId === serving.id);
    expect(draining?.at ?? Infinity).toBeLessThanOrEqual(handover?.at ?? 0);
    expect(lost).toContainEqual([serving.id, expect.stringMatching(/^hand-over: /)]);
    expect(events.some((e) => e.type === 'gone' && e.jobId === jobId)).toBe(true);

    // The continuation (the proxy's part): the whole generation, ended by its length.
    expect(finish).toBe('length');
    expect(text.length).toBeGreaterThan(0);
  });
});
