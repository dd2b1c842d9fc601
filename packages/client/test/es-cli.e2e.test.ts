/**
 * The built `es` binary against the built `es-scheduler` (local backend, mock engine), both
 * as child processes the way an operator runs them: `es` is started in the scheduler's
 * directory and finds its admin key through `./logs/secret` by itself.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ES = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));
const SCHEDULER = fileURLToPath(new URL('../../../apps/scheduler/dist/cli.mjs', import.meta.url));

let dir: string;
let url: string;
let scheduler: ChildProcess;
let exited: Promise<number | null>;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function es(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [ES, ...args, '--scheduler-url', url],
      // No ES_ADMIN_KEY / ES_SECRET_FILE: the key comes from ./logs/secret.
      { cwd: dir, env: { PATH: process.env.PATH ?? '' }, timeout: 20_000 },
      (error, stdout, stderr) =>
        resolve({
          code: error ? Number((error as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr,
        }),
    );
  });
}

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  for (const file of [ES, SCHEDULER]) {
    if (!existsSync(file)) throw new Error(`${file} missing: run pnpm build first`);
  }
  dir = mkdtempSync(join(tmpdir(), 'es-cli-e2e-'));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  scheduler = spawn(
    process.execPath,
    [
      SCHEDULER,
      ...['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'],
      ...['--max-nodes', '2', '--tensor-parallel-size', '4', '--port', String(port)],
      ...['--scheduler-id', `cli${process.pid}`, '--node-acquire-interval', '1'],
      ...['--health-check-interval', '1', '--heartbeat-timeout', '5'],
    ],
    { cwd: dir, stdio: 'ignore' },
  );
  exited = new Promise((resolve) => scheduler.on('exit', (code) => resolve(code)));
  await until(async () => {
    const { stdout } = await es('workers');
    return stdout.split('\n').filter((l) => /\sready\s/.test(l)).length === 4 ? true : undefined;
  }, '4 ready workers');
}, 60_000);

afterAll(async () => {
  if (scheduler && scheduler.exitCode === null && scheduler.signalCode === null) {
    scheduler.kill('SIGTERM');
    await exited;
  }
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
