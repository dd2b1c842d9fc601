/**
 * The `es` CLI and `/metrics` against the scheduler's wiring on the real SLURM dev cluster
 * (4 nodes × 8 fake GPUs, partitions `low` and `high`): SLURM states, pending reasons, time
 * left, a scale-up past the cluster's size, a preemption by a `high` job (requeue), and a
 * scale-down that cancels the pending jobs first. The scheduler is its own wiring
 * (`createScheduler`) in-process; moved here from packages/admin (issue 12).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
// apps/scheduler depends on neither @es/client nor @es/testkit; its tests run their code.
import type { StatusResponse } from '../../../packages/client/src/index.js';
import { cancelByNamePrefix, preempt } from '../../../packages/testkit/src/index.js';
import {
  esCli,
  metric,
  scrape,
  startAdminTestScheduler,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';

process.env.SLURM_CONF = inject('slurmConf');
const SID = `adm${Math.random().toString(36).slice(2, 8)}`;
let s: AdminTestScheduler;

const es = (...argv: string[]) => esCli(s, ...argv);
const status = async () => JSON.parse((await es('status', '--json')).stdout) as StatusResponse;

const readyCount = async () => (await status()).deployments[0]?.readyWorkers ?? 0;

beforeAll(async () => {
  s = await startAdminTestScheduler({ backend: 'slurm', maxNodes: 1, schedulerId: SID });
  await until(async () => ((await readyCount()) === 2 ? true : undefined), 120_000, '2 ready');
}, 180_000);

afterAll(async () => {
  await s?.close();
  await cancelByNamePrefix(`es-${SID}-`);
});

describe('es against the SLURM dev cluster', () => {
  it('es status shows SLURM nodes, time left and workers per node', async () => {
    const { code, stdout } = await es('status');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^scheduler adm\w+ \(slurm\)/);
    const jobRows = stdout.split('\n').filter((l) => /^\d+\s+mock\s+RUNNING\s/.test(l));
    expect(jobRows).toHaveLength(1);
    // The time limit is 60 min: squeue's time left is shown.
    for (const row of jobRows) expect(row).toMatch(/RUNNING\s+gpu\d\s+(\d+m\d\ds|1h00m)\s+0\s/);
    const workerRows = stdout.split('\n').filter((l) => /\sgpu\d\s+ready\s+(0-3|4-7)\s/.test(l));
    expect(workerRows).toHaveLength(2);
  });

  it('scaling past the cluster leaves jobs PENDING with their SLURM reason, then back down cancels them first', async () => {
    const up = await es('scale', 'mock', '--max-nodes', '6');
    expect(up.stdout).toMatch(/^mock: max nodes 1 → 6/);
    // Rows such as `89  mock  PENDING (Resources, expected start in 59m58s)  -  -  0  0s
    // PENDING(Resources) 0s`: the reason, and SLURM's expected start when it has one.
    const rows = await until(
      async () => {
        const out = (await es('jobs')).stdout;
        const found = out
          .split('\n')
          .filter((l) =>
            /^\d+\s+mock\s+PENDING \(\w+(?:, (?:expected start in \w+|starts now))?\)\s+-\s+-\s+0\s+.*PENDING\(\w+\) \d+s$/.test(
              l,
            ),
          );
        return found.length >= 2 ? found : undefined;
      },
      60_000,
      'two pending jobs with their SLURM reason in es jobs',
    );
    const pendingIds = rows.map((l) => l.split(/\s+/)[0] ?? '');

    const down = await es('scale', 'mock', '--max-nodes', '1');
    expect(down.code).toBe(0);
    const cancelled = /cancelled (.+)$/m.exec(down.stdout)?.[1]?.split(', ') ?? [];
    // Pending jobs go first: every pending one is among the cancelled.
    for (const id of pendingIds) expect(cancelled).toContain(id);
    await until(
      async () => {
        const st = await status();
        const live = (st.deployments[0]?.jobs ?? []).filter(
          (j) => j.state === 'RUNNING' || j.state === 'PENDING',
        );
        return live.length === 1 && st.deployments[0]?.readyWorkers === 2 ? true : undefined;
      },
      120_000,
      'back to 1 running job and 2 ready workers',
    );
  });

  it('a preemption by a high-priority job is counted and the requeued job shows restart 1', async () => {
    const before = await scrape(s);
    const st = await status();
    const victim = st.deployments[0]?.jobs.find((j) => j.state === 'RUNNING');
    expect(victim?.nodes).toMatch(/^gpu\d$/);
    await preempt(victim?.nodes ?? '', 15, `es-${SID}-high`);
    try {
      await until(
        async () =>
          metric(await scrape(s), 'es_preemptions_total', { deployment: 'mock' }) >
          metric(before, 'es_preemptions_total', { deployment: 'mock' })
            ? true
            : undefined,
        60_000,
        'the preemption counted',
      ).catch(async (error: unknown) => {
        // Say what the scheduler saw instead.
        throw new Error(
          `${String(error)}; events: ${(await es('events', '--limit', '30')).stdout}; jobs: ${(await es('jobs')).stdout}`,
        );
      });
      const events = JSON.parse((await es('events', '--json')).stdout) as {
        type: string;
        jobId?: string;
      }[];
      expect(events.some((e) => e.type === 'preempted' && e.jobId === victim?.jobId)).toBe(true);
      await until(
        async () => {
          const jobs = (await status()).deployments[0]?.jobs ?? [];
          return jobs.some((j) => j.jobId === victim?.jobId && j.restartCount >= 1)
            ? true
            : undefined;
        },
        60_000,
        'the requeued job with restart count 1',
      );
      const jobs = await es('jobs');
      expect(jobs.stdout).toMatch(new RegExp(`^${victim?.jobId}\\s+mock\\s+\\S+.*\\s1\\s`, 'm'));
    } finally {
      await cancelByNamePrefix(`es-${SID}-high`).catch(() => undefined);
    }
    const metrics = await scrape(s);
    expect(
      metric(metrics, 'es_provider_calls_total', { operation: 'list', outcome: 'ok' }),
    ).toBeGreaterThan(0);
    expect(
      metric(metrics, 'es_provider_calls_total', {
        provider: 'slurm',
        operation: 'submit',
        outcome: 'ok',
      }),
    ).toBeGreaterThanOrEqual(4);
  });
  it('es workers, es logs (job and engine), es drain (worker, then job: replaced) on SLURM', async () => {
    // The requeued job of the previous test comes back first.
    const ready = await until(
      async () => {
        const rows = (await es('workers')).stdout
          .split('\n')
          .filter((l) => /\sgpu\d\s+ready\s/.test(l));
        return rows.length === 2 ? rows : undefined;
      },
      120_000,
      '2 ready workers in es workers',
    );
    const [workerId = '', jobId = ''] = ready[0]?.split(/\s+/) ?? [];

    const jobLog = await es('logs', jobId);
    expect(jobLog.code).toBe(0);
    expect(jobLog.stdout).toMatch(/engine \d started/);
    const engineLog = await es('logs', workerId);
    expect(engineLog.code).toBe(0);
    expect(engineLog.stdout).toMatch(/mock engine: listening/);

    expect((await es('drain', workerId)).stdout).toBe(`worker ${workerId} draining\n`);
    expect((await status()).deployments[0]?.workers.find((w) => w.id === workerId)?.state).toBe(
      'draining',
    );
    const drained = await es('drain', jobId);
    expect(drained.stdout).toMatch(new RegExp(`^job ${jobId}: draining \\d worker\\(s\\)`));
    await until(
      async () => {
        const st = await status();
        const jobs = st.deployments[0]?.jobs ?? [];
        const old = jobs.find((j) => j.jobId === jobId);
        const others = jobs.filter((j) => j.jobId !== jobId && j.state === 'RUNNING');
        return old?.state === 'CANCELLED' &&
          others.length === 1 &&
          st.deployments[0]?.readyWorkers === 2
          ? true
          : undefined;
      },
      120_000,
      'the drained job cancelled and replaced',
    );
  });

  it('es stop --cancel-jobs leaves nothing in the queue', async () => {
    const name = (await status()).deployments[0]?.jobName ?? '';
    const result = await es('stop', '--cancel-jobs');
    expect(result.stdout).toBe('scheduler stopping and cancelling its jobs\n');
    await s.stopped;
    await until(
      async () => {
        const jobs = await s.scheduler.provider.list({ names: [name] });
        return jobs.every((j) => !['PENDING', 'RUNNING', 'CONFIGURING'].includes(j.state))
          ? true
          : undefined;
      },
      60_000,
      'no live job of ours',
    );
  });
});
