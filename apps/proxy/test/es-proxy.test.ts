import type { DataPlaneState } from '@es/protocol';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
// The stand-in scheduler of @es/proxy's data-plane tests (a registry's watch stream, reports).
import {
  MODEL,
  SECRET,
  newRegistry,
  readyEngine,
  startFakeScheduler,
  writeSchedulerUrl,
} from '../../../packages/proxy/test/data-plane-harness.js';
import type { Cleanups, FakeScheduler } from '../../../packages/proxy/test/data-plane-harness.js';
import { until } from '../../../packages/proxy/test/harness.js';
import { processAlive as alive } from '../../../packages/testkit/src/index.js';

/** The built binary (`pnpm build` first). */
const CLI = fileURLToPath(new URL('../dist/main.mjs', import.meta.url));

type State = DataPlaneState;

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('build es-proxy first: pnpm --filter @es/proxy-app build');
});

function readState(file: string): State | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as State;
  } catch {
    return undefined;
  }
}

interface Running {
  child: ChildProcess;
  dir: string;
  stateFile: string;
  urlFile: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function esProxy(args: string[], controlUrl?: string): Running {
  const dir = mkdtempSync(join(tmpdir(), 'es-proxy-'));
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  const stateFile = join(dir, 'data-plane.json');
  const urlFile = join(dir, 'control-url');
  if (controlUrl !== undefined) writeSchedulerUrl(urlFile, controlUrl);
  const child = spawn(
    process.execPath,
    [
      CLI,
      ...['--secret-file', secretFile, '--scheduler-url-file', urlFile],
      ...['--state-file', stateFile, '--host', '127.0.0.1', ...args],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stdout!.resume();
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const workers = readState(stateFile)?.workers ?? [];
      child.kill('SIGKILL');
      for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return { child, dir, stateFile, urlFile, stderr: () => stderr, exited };
}

/** es-proxy --processes 2 on a free port, following a stand-in scheduler; once both listen. */
async function serving(): Promise<{ running: Running; state: State; scheduler: FakeScheduler }> {
  const registry = newRegistry();
  await readyEngine(registry, '201', cleanups, { tokensPerSecond: 40 });
  const scheduler = await startFakeScheduler(registry, cleanups);
  const running = esProxy(['--port', '0', '--processes', '2'], scheduler.url);
  await until(() => readState(running.stateFile)?.workers.length === 2, 15_000);
  const state = readState(running.stateFile)!;
  // Each worker has its table before the test asks: both answer /health with 200.
  const withTable = new Set<string>();
  await until(async () => {
    const health = await fetch(`http://127.0.0.1:${state.port}/health`, {
      headers: { connection: 'close' },
    }).catch(() => undefined);
    if (health?.status === 200) withTable.add(health.headers.get('x-es-data-plane') ?? '');
    return withTable.size === 2;
  }, 10_000);
  return { running, state, scheduler };
}

const ask = (port: number, maxTokens = 3) =>
  new OpenAI({
    baseURL: `http://127.0.0.1:${port}/v1`,
    apiKey: 'unused',
    maxRetries: 0,
  }).chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Say something.' }],
    max_tokens: maxTokens,
  });

/** A free port of 127.0.0.1, held by a listener until `release`. */
async function occupiedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

describe('es-proxy (the built binary)', () => {
  it('--processes 2: writes its state file (0600) with both worker pids and serves /v1', async () => {
    const { running, state } = await serving();
    expect(state.pid).toBe(running.child.pid);
    expect(state.processes).toBe(2);
    expect(new Set(state.workers).size).toBe(2);
    for (const pid of state.workers) expect(alive(pid)).toBe(true);
    expect(statSync(running.stateFile).mode & 0o777).toBe(0o600);
    for (let i = 0; i < 4; i++) expect((await ask(state.port)).choices).toHaveLength(1);
  });

  it('a SIGKILLed worker: the port keeps answering, also while the primary respawns it', async () => {
    const { running, state, scheduler } = await serving();
    const [victim, survivor] = state.workers as [number, number];
    // /health on a new connection every 10 ms from the kill until 1 s after the respawn,
    // with the scheduler slow to answer the respawn's subscription (1.5 s): the respawned
    // process must not take connections before it has a routing table.
    const statuses: (number | string)[] = [];
    let probing = true;
    const probes = (async () => {
      while (probing) {
        const health = await fetch(`http://127.0.0.1:${state.port}/health`, {
          headers: { connection: 'close' },
          signal: AbortSignal.timeout(2_000),
        }).catch((error: unknown) => (error as Error).message);
        statuses.push(typeof health === 'string' ? health : health.status);
        if (typeof health !== 'string') await health.arrayBuffer();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const release = scheduler.holdWatch();
    process.kill(victim, 'SIGKILL');
    // Every request from now on is answered (a fresh connection each time).
    for (let i = 0; i < 6; i++) expect((await ask(state.port)).choices).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    release();
    await until(() => {
      const now = readState(running.stateFile);
      return now !== undefined && !now.workers.includes(victim) && now.workers.length === 2;
    }, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    probing = false;
    await probes;
    expect(statuses.length).toBeGreaterThan(50);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const after = readState(running.stateFile)!;
    expect(after.workers).toContain(survivor);
    expect(after.pid).toBe(state.pid);
    for (const pid of after.workers) expect(alive(pid)).toBe(true);
  });

  it('exits 3 with one line naming host:port when the port is in use', async () => {
    const port = await occupiedPort();
    const running = esProxy(['--port', String(port), '--processes', '2']);
    const { code } = await running.exited;
    expect(code).toBe(3);
    const lines = running.stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`127.0.0.1:${port}`);
    expect(existsSync(running.stateFile)).toBe(false);
  });

  it('SIGTERM: a stream in flight finishes, then it exits 0 with its workers', async () => {
    const { running, state } = await serving();
    // 20 tokens at 40 tokens/s: in flight for about half a second after its first chunk.
    const stream = await new OpenAI({
      baseURL: `http://127.0.0.1:${state.port}/v1`,
      apiKey: 'unused',
      maxRetries: 0,
    }).chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Count.' }],
      max_tokens: 20,
      stream: true,
    });
    const chunks = stream[Symbol.asyncIterator]();
    expect((await chunks.next()).done).toBe(false);
    running.child.kill('SIGTERM');
    let finish: string | null | undefined;
    for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) {
      finish = next.value.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('length');
    expect(await running.exited).toEqual({ code: 0, signal: null });
    for (const pid of state.workers) await until(() => !alive(pid), 5_000);
  });

  it('refuses a secret file readable by others, naming --secret-file (exit 2)', async () => {
    const running = esProxy(['--port', '0']);
    // Re-spawned below with a world-readable secret.
    running.child.kill('SIGKILL');
    await running.exited;
    const open = join(running.dir, 'open-secret');
    writeFileSync(open, `${SECRET}\n`, { mode: 0o644 });
    const child = spawn(
      process.execPath,
      [CLI, '--secret-file', open, '--scheduler-url-file', running.urlFile, '--port', '0'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('--secret-file');
  });
});
