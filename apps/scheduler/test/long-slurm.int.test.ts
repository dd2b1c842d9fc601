/**
 * The long profile of the SLURM integration tests: scenarios that take minutes because they
 * wait for SLURM itself. They run only with `ES_LONG_TESTS=1` (`ES_LONG_TESTS=1 pnpm exec
 * vitest run --project integration apps/scheduler/test/long-slurm.int.test.ts`), not in CI.
 *
 * - Without the release (`--no-release-requeued`), a preempted job waits for the begin time
 *   SLURM gives its requeue (cred_expire 120 s + 1 s on the dev cluster, as on a production
 *   cluster) although a node is free: the control of scheduler-slurm.int.test.ts (b), which
 *   shows the capacity back within seconds with the release, so (b) measures the release.
 * - A real time limit: a deployment whose jobs have `--time-limit 0:02:00` retires each job
 *   a quarter of its limit (30 s) before its end; the successor must serve before the old
 *   job's walltime, the old job must drain and hand over before SLURM kills it, and a
 *   generation running across all of it must reach the client whole.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { cancelByNamePrefix, preempt, runSlurm } from '../../../packages/testkit/src/index.js';
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';
import {
  FAST_FLAGS,
  freePort,
  killStartedSchedulers,
  startSchedulerProcess,
  waitFor,
} from './harness.js';

const SID = `itlong${Math.random().toString(36).slice(2, 8)}`;
const LIMIT_MS = 120_000;
const TOKENS_PER_SECOND = 20;

afterAll(async () => {
  await killStartedSchedulers();
  await cancelByNamePrefix(`es-${SID}`);
});

/** Flags of a SLURM-backed scheduler of mock-model in partition low, named `<SID><id>`. */
const slurmArgs = async (id: string, extra: string[]) => [
  ...['--backend', 'slurm', '--engine', 'mock', '--model', 'mock-model', '--partition', 'low'],
  ...['--scheduler-id', `${SID}${id}`, '--host', '127.0.0.1'],
  ...['--worker-base-port', String(await freePort())],
  ...FAST_FLAGS,
  ...extra,
];

/** The jobs of scheduler `<SID><id>` as squeue shows them (`-t all`): id, state, start (ms). */
async function jobs(id: string): Promise<{ id: string; state: string; start: number }[]> {
  const name = `es-${SID}${id}-mock-model`;
  const out = await runSlurm('squeue', ['-h', '-t', 'all', '-n', name, '-o', '%i|%T|%S']);
  return out.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [id = '', state = '', start = ''] = l.trim().split('|');
      return { id, state, start: new Date(start).getTime() };
    });
}

describe.skipIf(process.env.ES_LONG_TESTS !== '1')('a real time limit (long profile)', () => {
  it('the successor serves before the walltime, the old job hands over, no generation is cut', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-timelimit-'));
    const scheduler = await startSchedulerProcess({
      args: await slurmArgs('t', [
        ...['--max-nodes', '1', '--tensor-parallel-size', '8', '--time-limit', '0:02:00'],
        `--engine-extra-args=--tokens-per-second ${TOKENS_PER_SECOND}`,
        // The dev cluster's KillWait is 5 s: the hand-over must come before SLURM's SIGKILL.
        ...['--drain-grace', '4', '--handover-margin', '3'],
      ]),
      env: { SLURM_CONF: inject('slurmConf') },
      logDir: join(dir, 'logs'),
    });
    const [first] = await waitFor(
      'the first job ready',
      async () => ((await scheduler.readyWorkerIds()).length === 1 ? await jobs('t') : []),
      (list) => list.length === 1 && list[0]?.state === 'RUNNING',
      90_000,
      250,
    );
    if (first === undefined) throw new Error('no first job');
    const endsAt = first.start + LIMIT_MS;
    // A generation of 70 s that starts 30 s before the retirement (a quarter of the limit
    // before the end): it runs through the successor's start, the drain and the walltime,
    // where SLURM ends the old job, so it must be handed over or continued.
    const maxTokens = 70 * TOKENS_PER_SECOND;
    await new Promise((r) => setTimeout(r, Math.max(0, endsAt - 60_000 - Date.now())));
    const client = new OpenAI({ baseURL: `${scheduler.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'a long answer' }],
      max_tokens: maxTokens,
      stream: true,
    });
    let successorReadyAt: number | undefined;
    const watch = (async () => {
      while (successorReadyAt === undefined && Date.now() < endsAt + 30_000) {
        const ready = await scheduler.readyWorkerIds();
        if (ready.some((id) => !id.startsWith(`${first.id}.`))) successorReadyAt = Date.now();
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    await watch;
    const expected = expectedGeneration(
      { kind: 'chat', messages: [{ role: 'user', content: 'a long answer' }] },
      { maxTokens },
    );
    expect(text).toBe(expected.deltas.join(''));
    expect(successorReadyAt, 'the successor was never ready').toBeDefined();
    console.log(
      `successor ready ${Math.round((endsAt - (successorReadyAt ?? 0)) / 1000)} s before the first job's walltime`,
    );
    expect(successorReadyAt).toBeLessThan(endsAt);
    const ended = await waitFor(
      'the first job ended',
      () => jobs('t'),
      (list) => list.find((j) => j.id === first.id)?.state !== 'RUNNING',
      60_000,
      500,
    );
    const drained = scheduler.logs.find(
      (l) => l.event === 'draining' && String(l.workerId ?? '').startsWith(`${first.id}.`),
    );
    expect(drained, 'the first job was never drained').toBeDefined();
    // The data plane reports its continuations every second or so: wait for the event.
    const moved = await waitFor(
      'the generation handed over or continued (scheduler events)',
      async () =>
        scheduler.logs.filter(
          (l) =>
            (l.event === 'hand-over' || l.event === 'continuation') &&
            String(l.workerId ?? '').startsWith(`${first.id}.`),
        ),
      (lines) => lines.length > 0,
      15_000,
      250,
    );
    const story = scheduler.logs
      .filter((l) => l.jobId === first.id || String(l.workerId ?? '').startsWith(`${first.id}.`))
      .filter((l) => l.event !== undefined)
      .map((l) => `${Math.round((l.time - first.start) / 1000)} s ${l.msg}`);
    console.log(
      `first job ${first.id} (limit ${LIMIT_MS / 1000} s): ${ended.find((j) => j.id === first.id)?.state}\n${story.join('\n')}\n${moved.map((l) => `${l.event}: ${l.reason ?? ''}`).join('\n')}`,
    );
    // Free the nodes for the next scenario.
    await scheduler.stop('SIGTERM');
    await cancelByNamePrefix(`es-${SID}t-`);
  }, 300_000);
});

describe.skipIf(process.env.ES_LONG_TESTS !== '1')('without the release (long profile)', () => {
  it('a preempted job comes back only after SLURM’s requeue begin time, about 120 s', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-norelease-'));
    const scheduler = await startSchedulerProcess({
      args: await slurmArgs('r', [
        '--max-nodes',
        '3',
        '--tensor-parallel-size',
        '4',
        '--no-release-requeued',
      ]),
      env: { SLURM_CONF: inject('slurmConf') },
      logDir: join(dir, 'logs'),
    });
    await waitFor(
      '6 ready workers',
      () => scheduler.readyWorkerIds(),
      (ids) => ids.length === 6,
      90_000,
      250,
    );
    const listed = await runSlurm('squeue', [
      ...['-h', '-n', `es-${SID}r-mock-model`, '-t', 'running', '-o', '%i %N'],
    ]);
    const [victimId = '', node = ''] = listed.stdout.trim().split('\n')[0]?.split(' ') ?? [];
    const preemptedAt = Date.now();
    await preempt(node, 12, `es-${SID}-preempt`);
    await waitFor(
      'the requeued job ready again',
      () => scheduler.readyWorkerIds(),
      (ids) => ids.length === 6 && ids.filter((id) => id.startsWith(`${victimId}.1.`)).length === 2,
      200_000,
      500,
    );
    const backAfter = Date.now() - preemptedAt;
    console.log(`without the release: capacity back ${backAfter} ms after the preemption`);
    expect(scheduler.logs.some((l) => l.event === 'released')).toBe(false);
    expect(backAfter).toBeGreaterThan(100_000);
  }, 300_000);
});
