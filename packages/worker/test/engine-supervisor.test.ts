import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { signalGroup } from '@es/proc';
import { createEngineSupervisor } from '../src/engine-supervisor.js';
import type { EngineSupervisor } from '../src/engine-supervisor.js';
import { mockAdapter } from '../src/index.js';
import { healthPolicy } from '../src/health.js';
import type { HealthPhase, HealthPolicy } from '../src/health.js';
import { createFakeClock } from './fake-clock.js';
import type { FakeClock } from './fake-clock.js';
import { groupAlive } from './engine-helpers.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const KEY = 'es-engine-test-key-0123456789';

/** The worker's defaults. */
const defaults = healthPolicy({}, '/health');

/** A supervised mock engine on a fake clock; every report and log line is recorded. */
function supervise(
  policy: Partial<HealthPolicy>,
  engineBin?: string,
  listen: { unixSocket: boolean } = { unixSocket: true },
) {
  const clock: FakeClock = createFakeClock();
  const reports: { phase: HealthPhase; reason: string | undefined }[] = [];
  const logs: string[] = [];
  const record = (_: object, message: string) => void logs.push(message);
  const engine: EngineSupervisor = createEngineSupervisor({
    index: 0,
    gpus: [0],
    port: 0,
    host: '127.0.0.1',
    socketDir: mkdtempSync(join(tmpdir(), 'es-')),
    unixSocket: listen.unixSocket,
    key: KEY,
    logFile: join(mkdtempSync(join(tmpdir(), 'es-supervisor-')), 'engine.log'),
    adapter: mockAdapter,
    spec: {
      engine: 'mock',
      model: 'mock-model',
      tensorParallelSize: 1,
      gpuMemoryUtilization: 0.9,
      extraArgs: ['--tokens-per-second', '0', '--ttft', '0'],
      engineBin,
    },
    env: process.env,
    policy: { ...defaults, ...policy },
    killGraceMs: 2_000,
    clock,
    logger: { info: record, warn: record, error: record },
    report: async () => {
      reports.push({ phase: engine.health.phase, reason: engine.health.reason });
    },
  });
  cleanups.push(async () => {
    engine.halt();
    engine.killSync();
    await engine.stop();
  });
  const reported = (test: (report: (typeof reports)[number]) => boolean) =>
    vi.waitFor(
      () => {
        const found = reports.find(test);
        if (!found) throw new Error(`not reported yet: ${JSON.stringify(reports)}`);
        return found;
      },
      { timeout: 30_000, interval: 10 },
    );
  /** Fires the clock's timers (probes) until the engine reports ready. */
  const untilReady = async () => {
    const before = reports.length;
    while (!reports.slice(before).some((report) => report.phase === 'ready')) {
      await clock.fireNext();
    }
  };
  return { clock, engine, reports, logs, reported, untilReady };
}

describe('the engine supervisor on a fake clock, with real processes', () => {
  it('restarts a dying engine after 1, 2, 4 s of clock time, then reports it failed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-dying-'));
    const dying = join(dir, 'dying-engine.mjs');
    writeFileSync(dying, 'process.exit(7);\n');
    const { clock, engine, reported } = supervise({ maxRestarts: 3 }, dying);
    await engine.listen(true);
    await engine.launch();
    const pids = [engine.pid];
    for (const [n, delay] of [
      [1, 1_000],
      [2, 2_000],
      [3, 4_000],
    ] as const) {
      const reason = `engine exited (code 7); restart ${n}/3 in ${delay} ms`;
      await reported((report) => report.phase === 'restarting' && report.reason === reason);
      // The restart waits for the clock: the backoff is the only timer left.
      expect(clock.pending()).toEqual([delay]);
      expect(await clock.fireNext()).toBe(delay);
      await vi.waitFor(() => expect(engine.pid).not.toBe(pids.at(-1)));
      pids.push(engine.pid);
    }
    await reported(
      (report) =>
        report.phase === 'failed' &&
        report.reason === 'engine exited (code 7); not restarting after 4 failure(s)',
    );
    expect(engine.health.crashes).toBe(4);
    expect(clock.pending()).toEqual([]);
  });

  it('takes a hung engine out of routing, and kills and restarts it after hungRestartMs of clock time', async () => {
    const { clock, engine, reported, logs, untilReady } = supervise({ livenessTimeoutMs: 1_000 });
    await engine.listen(true);
    await engine.launch();
    await untilReady();
    const pid = engine.pid!;
    // Hung: the process is stopped, the kernel still accepts connections; nothing answers.
    process.kill(-pid, 'SIGSTOP');
    cleanups.push(() => void signalGroup(pid, 'SIGCONT'));
    while (engine.health.phase !== 'unready') await clock.fireNext();
    await reported(
      (report) =>
        report.phase === 'unready' &&
        report.reason === 'engine not answering /health (3 probes in a row)',
    );
    expect(engine.pid).toBe(pid);
    // A minute of silence on the clock: the next failed probe kills it.
    await clock.nextTimer((ms) => ms === 50);
    clock.advance(60_000);
    await reported(
      (report) =>
        report.phase === 'restarting' &&
        report.reason === 'engine exited (SIGKILL); restart 1/5 in 1000 ms',
    );
    expect(logs).toContain('engine 0 silent for 60 s: killing it to restart');
    // Its group is gone (an orphaned engine is reaped by PID 1, which may take a moment).
    await vi.waitFor(() => expect(groupAlive(pid)).toBe(false), { timeout: 5_000, interval: 50 });
    expect(await clock.fireNext()).toBe(1_000);
    await untilReady();
    expect(engine.pid).not.toBe(pid);
    expect(engine.health).toMatchObject({ phase: 'ready', crashes: 1, reason: undefined });
  }, 60_000);

  it('an engine on loopback becomes ready once its own process holds the port', async () => {
    const { engine, untilReady, logs } = supervise({}, undefined, { unixSocket: false });
    await engine.listen(true);
    await engine.launch();
    await untilReady();
    expect(logs.some((line) => line.includes('not the engine'))).toBe(false);
  });

  it('a loopback port another user took before the engine bound it never becomes ready', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-squat-'));
    chmodSync(dir, 0o755);
    // An "engine" that never binds: it tells the test the port it was given, then waits.
    const lazy = join(dir, 'lazy-engine.mjs');
    writeFileSync(
      lazy,
      `import { writeFileSync } from 'node:fs';
const port = process.argv.find((arg) => arg.startsWith('--port='))?.slice(7);
writeFileSync(${JSON.stringify(join(dir, 'port'))}, String(port));
setInterval(() => {}, 1000);
`,
    );
    const { clock, engine, reports, logs } = supervise({}, lazy, { unixSocket: false });
    await engine.listen(true);
    await engine.launch();
    const port = Number(
      await vi.waitFor(() => readFileSync(join(dir, 'port'), 'utf8'), { timeout: 10_000 }),
    );
    // The squatter: another user (when the test runs as root) answering 200 on every path.
    const squatter = spawn(
      process.execPath,
      [
        '-e',
        `require('node:http').createServer((q, s) => s.end('ok')).listen(${port}, '127.0.0.1', () => console.log('up'))`,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        ...(process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}),
      },
    );
    cleanups.push(() => void squatter.kill('SIGKILL'));
    await new Promise((resolve) => squatter.stdout?.once('data', resolve));
    const squatted = await fetch(`http://127.0.0.1:${port}/health`);
    expect(squatted.status).toBe(200);
    for (let probe = 0; probe < 5; probe++) await clock.fireNext();
    await vi.waitFor(() =>
      expect(logs).toContain(
        `engine 0: 127.0.0.1:${port} answers but is not the engine's socket (another user's process?): not ready`,
      ),
    );
    expect(reports.map((report) => report.phase)).not.toContain('ready');
    expect(engine.health.phase).toBe('loading');
  });
});
