/**
 * `scripts/load-test` as the seed's users run it, against the real scheduler on the local
 * backend (the built `es-scheduler --backend local --engine mock`: worker processes and mock
 * engines on 127.0.0.1): the cluster banner before the test, the bounded wait for ready
 * workers with its progress lines, and the requests each worker answered after it.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  FAST_FLAGS,
  killStartedSchedulers,
  startSchedulerProcess,
  waitFor,
  type SchedulerProcess,
} from '../../../apps/scheduler/test/harness.js';

const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'load-test');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs scripts/load-test to its end, whatever its exit code. */
const loadTest = (args: string[]): Promise<Run> =>
  new Promise((resolve) => {
    execFile(SCRIPT, args, { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });

let scheduler: SchedulerProcess;

beforeAll(async () => {
  scheduler = await startSchedulerProcess({
    // One node of 8 GPUs at TP 4: two workers. Their engines take 15 s to load, as a real
    // model does (longer), so the first two tests meet a cluster with no ready worker.
    args: [
      ...'--backend local --engine mock --model mock-model --max-nodes 1 --tensor-parallel-size 4'.split(
        ' ',
      ),
      '--engine-extra-args=--load-delay 15000',
      ...FAST_FLAGS,
      '--scheduler-id',
      'research-load-test',
    ],
    logDir: join(mkdtempSync(join(tmpdir(), 'es-load-test-e2e-')), 'logs'),
  });
}, 60_000);

afterAll(async () => {
  await killStartedSchedulers();
});

describe('scripts/load-test against the scheduler (local backend)', () => {
  test('no ready worker within --wait-timeout: progress lines, then a clear error and exit 1', async () => {
    const run = await loadTest([
      '--scheduler-url',
      scheduler.url,
      '--num-requests',
      '4',
      '--wait-timeout',
      '1',
      '--wait-interval',
      '0.2',
    ]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    // The banner first, with what the scheduler already knows.
    expect(run.stderr).toContain(`scheduler    ${scheduler.url}\n`);
    expect(run.stderr).toContain('model        mock-model (engine mock)\n');
    expect(run.stderr).toContain('nodes        ');
    expect(run.stderr).toContain('TP=4, DP=2/node\n');
    expect(run.stderr).toMatch(/^workers {6}0 ready, /m);
    // Then one line per look at the cluster, and the error naming the flag to change.
    expect(run.stderr).toMatch(/^waiting for ready workers: 0 ready, \d+ loading, /m);
    expect(run.stderr).toMatch(
      new RegExp(
        `^load-test: no ready worker at ${scheduler.url} after 1 s \\(last check: 0 ready, .*\\)\\. ` +
          "See the scheduler's log or `scripts/es status`; raise --wait-timeout to wait longer$",
        'm',
      ),
    );
  });

  test('Ctrl-C while waiting stops with one line saying so', async () => {
    const child = spawn(SCRIPT, ['--scheduler-url', scheduler.url, '--wait-interval', '0.2']);
    let stderr = '';
    let interrupted = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      // One Ctrl-C, as a user presses it (a second one would kill the process at once).
      if (stderr.includes('waiting for ready workers:') && !interrupted) {
        interrupted = child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(1);
    expect(stderr).toMatch(/\nload-test: interrupted while waiting for a ready worker\n$/);
  });

  test("the seed's flags: the banner, the wait until workers are ready, then requests per worker", async () => {
    const run = await loadTest([
      // scripts/test_load.py's own flags, as its users type them.
      '--scheduler-url',
      scheduler.url,
      '--num-requests',
      '24',
      '--concurrency',
      '4',
      '--max-tokens',
      '8',
      '--temperature',
      '0.7',
      '--wait-timeout',
      '45',
      '--wait-interval',
      '0.5',
    ]);
    expect(run.stderr).not.toContain('load-test:');
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('model        mock-model (engine mock)\n');
    expect(run.stderr).toContain(
      'test         24 requests, concurrency 4, chat, streaming, prompt ~128 tokens, ' +
        'max_tokens 8, temperature 0.7\n',
    );
    // It waited (the engines were still loading), said so, and started once one was ready.
    expect(run.stderr).toMatch(/^waiting for ready workers: 0 ready, /m);
    expect(run.stderr).toMatch(
      /^cluster: [12] ready workers? serving mock-model \(after [\d.]+ s\)$/m,
    );
    expect(run.stdout).toMatch(/^requests {5}24 ok, 0 failed/m);

    // After the test: the requests each worker answered, adding up to the test's.
    const counts = workerCounts(run.stdout);
    const ids = (await scheduler.clusterStatus()).workers.map((w) => w.worker_id);
    expect([...counts.keys()].every((id) => ids.includes(id))).toBe(true);
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(24);
  }, 90_000);

  test('requests per worker show the spread over every ready worker', async () => {
    await waitFor(
      'both workers ready',
      () => scheduler.readyWorkerIds(),
      (ids) => ids.length === 2,
      30_000,
    );
    const ids = await scheduler.readyWorkerIds();
    const run = await loadTest([
      '--scheduler-url',
      scheduler.url,
      '--num-requests',
      '20',
      '--concurrency',
      '4',
      '--max-tokens',
      '8',
    ]);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^workers {6}2 ready, 0 loading, 0 offline, /m);
    expect(run.stderr).not.toContain('waiting for ready workers:');
    const counts = workerCounts(run.stdout);
    // Least-outstanding routing with 4 requests in flight on 2 workers: both answer.
    expect([...counts.keys()].sort()).toEqual(ids);
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(20);
    expect(Math.min(...counts.values())).toBeGreaterThan(0);
    expect(run.stdout).toMatch(
      new RegExp(
        `^workers {6}2 answered, ${Math.min(...counts.values())} to ${Math.max(...counts.values())} requests each$`,
        'm',
      ),
    );
  }, 60_000);
});

/** The `workers` section of a text report: worker id -> requests it answered. */
function workerCounts(stdout: string): Map<string, number> {
  const section = stdout.slice(stdout.indexOf('\nworkers      '));
  return new Map(
    [...section.matchAll(/^ {15}(\S+) +(\d+)$/gm)].map((m) => [m[1] as string, Number(m[2])]),
  );
}
