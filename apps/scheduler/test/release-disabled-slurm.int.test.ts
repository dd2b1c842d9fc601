/**
 * The control of scheduler-slurm.int.test.ts (b): with `--no-release-requeued` a preempted
 * job waits for the begin time SLURM gives its requeue (cred_expire 120 s + 1 s on the dev
 * cluster, as on a production cluster) although a node is free, so capacity comes back
 * about two minutes later instead of within seconds: (b) measures the release. Two and a
 * half minutes: it runs in the long profile only (`ES_LONG_TESTS=1 pnpm exec vitest run
 * --project integration apps/scheduler/test/release-disabled-slurm.int.test.ts`).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { cancelByNamePrefix, preempt, runSlurm } from '../../../packages/testkit/src/index.js';
import {
  FAST_FLAGS,
  freePort,
  killStartedSchedulers,
  startSchedulerProcess,
  waitFor,
} from './harness.js';

const SID = `itnorel${Math.random().toString(36).slice(2, 8)}`;
const JOB_NAME = `es-${SID}-mock-model`;

afterAll(async () => {
  await killStartedSchedulers();
  await cancelByNamePrefix(`es-${SID}-`);
});

describe.skipIf(process.env.ES_LONG_TESTS !== '1')('without the release (long profile)', () => {
  it('a preempted job comes back only after SLURM’s requeue begin time, about 120 s', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-norelease-'));
    const scheduler = await startSchedulerProcess({
      args: [
        ...['--backend', 'slurm', '--engine', 'mock', '--model', 'mock-model'],
        ...['--max-nodes', '3', '--tensor-parallel-size', '4', '--partition', 'low'],
        ...['--scheduler-id', SID, '--host', '127.0.0.1', '--no-release-requeued'],
        ...['--worker-base-port', String(await freePort())],
        ...FAST_FLAGS,
      ],
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
    const listed = await runSlurm('squeue', ['-h', '-n', JOB_NAME, '-t', 'running', '-o', '%i %N']);
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
