/**
 * The built `es` binary against the built `es-scheduler` (local backend, mock engine), both
 * as child processes the way an operator runs them: `es` is started in the scheduler's
 * directory and finds its admin key through `./logs/secret` by itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, runEs, startBuiltScheduler, until, type BuiltScheduler } from './built.js';

let dir: string;
let url: string;
let scheduler: BuiltScheduler;
let exited: Promise<number | null>;

// No ES_ADMIN_KEY / ES_SECRET_FILE: the key comes from ./logs/secret.
const es = (...args: string[]) => runEs(dir, {}, [...args, '--scheduler-url', url]);

beforeAll(async () => {
  assertBuilt();
  dir = mkdtempSync(join(tmpdir(), 'es-cli-e2e-'));
  scheduler = await startBuiltScheduler(dir, `cli${process.pid}`);
  ({ url, exited } = scheduler);
  await until(
    async () => {
      const { stdout } = await es('workers');
      return stdout.split('\n').filter((l) => /\sready\s/.test(l)).length === 4 ? true : undefined;
    },
    30_000,
    '4 ready workers',
  );
}, 60_000);

afterAll(async () => {
  await scheduler?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('es against the built es-scheduler', () => {
  it('status, jobs and workers print the tables', async () => {
    const status = await es('status');
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^scheduler cli\d+ \(local\)/);
    expect(status.stdout).toMatch(/^mock-model\s+4\/4\s+2\s+2\s+0/m);
    const jobs = await es('jobs');
    expect(
      jobs.stdout.split('\n').filter((l) => /\sRUNNING\s+local-\d\s.*→ ready$/.test(l)),
    ).toHaveLength(2);
    const workers = await es('workers', '--json');
    const list = JSON.parse(workers.stdout) as { gpus: number[]; state: string }[];
    expect(list.map((w) => w.gpus.join(',')).sort()).toEqual([
      '0,1,2,3',
      '0,1,2,3',
      '4,5,6,7',
      '4,5,6,7',
    ]);
  });

  it('logs, drain, scale and stop act on the running scheduler', async () => {
    const workers = JSON.parse((await es('workers', '--json')).stdout) as {
      id: string;
      jobId: string;
    }[];
    const [first] = workers;
    expect((await es('logs', first?.id ?? '')).stdout).toMatch(/mock engine: listening/);
    expect((await es('drain', first?.id ?? '')).stdout).toBe(`worker ${first?.id} draining\n`);
    const scaled = await es('scale', 'mock-model', '--max-nodes', '1');
    expect(scaled.stdout).toMatch(/^mock-model: max nodes 2 → 1; cancelled \d+\n$/);
    const stop = await es('stop', '--cancel-jobs');
    expect(stop.stdout).toBe('scheduler stopping and cancelling its jobs\n');
    expect(await exited).toBe(0);
    const after = await es('status');
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(
      /scheduler not reachable at http:\/\/127\.0\.0\.1:\d+: is it running\?/,
    );
  });
});
