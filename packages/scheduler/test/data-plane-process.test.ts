/**
 * The data plane follows the jobs' policy: a scheduler that leaves its jobs running (SLURM's
 * default) leaves its es-proxy serving too, says how to stop it, and keeps the client URL
 * file; the next scheduler re-adopts that es-proxy, and one that cancels its jobs ends it.
 * In-process schedulers with an injected provider and the built es-proxy (`pnpm build`).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createLocalProvider, type LocalProvider } from '@es/local';
import { readSchedulerUrlSync, schedulerUrlFilePath } from '@es/protocol';
import { until } from '@es/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createScheduler, resolveConfig, type Scheduler } from '../src/index.js';

let dir: string | undefined;
let provider: LocalProvider | undefined;
const schedulers: Scheduler[] = [];
let statePid: number | undefined;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

afterEach(async () => {
  for (const s of schedulers.splice(0)) await s.close({ cancelJobs: true });
  await provider?.close({ kill: true });
  // What a failure left serving.
  if (statePid !== undefined && alive(statePid)) process.kill(-statePid, 'SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
  provider = dir = statePid = undefined;
});

describe('the data plane of a scheduler that leaves its jobs running', () => {
  it('keeps serving after close(), is re-adopted by the next scheduler, and ends with the jobs', async () => {
    dir = mkdtempSync(join(tmpdir(), 'es-data-plane-process-'));
    const logDir = join(dir, 'logs');
    const lines: { msg: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) {
          if (line.trim() !== '') lines.push(JSON.parse(line) as { msg: string });
        }
        done();
      },
    });
    // The SLURM backend's policy (jobs outlive the scheduler), with jobs of no consequence.
    const settings = resolveConfig(
      {
        backend: 'slurm',
        model: 'mock-model',
        maxNodes: 0,
        host: '127.0.0.1',
        port: 0,
        logDir,
        proxyProcesses: 1,
      },
      {},
    );
    provider = createLocalProvider({ nodes: 1, gpusPerNode: 8, killGraceMs: 200 });
    const deps = { logger: pino({ level: 'info' }, sink), provider };
    const first = await createScheduler(settings, deps);
    schedulers.push(first);
    const state = () =>
      JSON.parse(readFileSync(join(logDir, 'data-plane.json'), 'utf8')) as {
        pid: number;
        port: number;
      };
    statePid = state().pid;
    expect(state().port).toBe(first.port);
    expect(first.controlPort).not.toBe(first.port);
    // The port answers (503 here: no worker is ready, none was asked for).
    const answers = async (port: number) =>
      (await fetch(`http://127.0.0.1:${port}/health`)).headers.get('content-type');
    expect(await answers(first.port)).toMatch(/json/);

    await first.close();
    schedulers.splice(0);
    // Left serving, with the way to stop it, and its URL still where es and users look.
    expect(alive(statePid)).toBe(true);
    expect(await answers(first.port)).toMatch(/json/);
    expect(lines.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(new RegExp(`keeps serving .*To stop it: kill -TERM ${statePid}$`)),
    );
    expect(readSchedulerUrlSync(schedulerUrlFilePath(logDir))).toEqual({
      kind: 'url',
      url: first.url,
    });

    // Port 0: the next scheduler takes the es-proxy it finds, wherever it serves.
    const second = await createScheduler(settings, deps);
    schedulers.push(second);
    expect(second.port).toBe(first.port);
    expect(state().pid).toBe(statePid);
    expect(lines.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(new RegExp(`^re-adopted es-proxy \\(pid ${statePid}, 1 process\\)`)),
    );

    await second.close({ cancelJobs: true });
    schedulers.splice(0);
    const pid = statePid;
    await until(() => (alive(pid) ? undefined : true), 20_000);
    expect(readSchedulerUrlSync(schedulerUrlFilePath(logDir))).toEqual({ kind: 'missing' });
  }, 60_000);
});
