import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deriveEngineKey } from '@es/protocol';
import type { RegisterRequest } from '@es/protocol';
import { startFakeScheduler } from '@es/testkit';
import OpenAI from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
// What the engine answers; this app does not depend on @es/mock-engine (its package.json is
// not ours to change), so its source is imported directly.
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

const CLI = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));
const MOCK = fileURLToPath(new URL('../../../packages/mock-engine/dist/cli.mjs', import.meta.url));

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  for (const file of [CLI, MOCK]) {
    if (!existsSync(file)) throw new Error(`${file} missing: run pnpm build first`);
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function runWorker(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child: ChildProcess = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, SLURM_JOB_ID: '', SLURM_RESTART_COUNT: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return { child, exited, output: () => output };
}

// PIDs of processes whose command line holds `--port <port>` (the engines).
/**
 * Pids of the mock engines of worker `workerPid` (children of its engine guards) whose
 * command line names the private socket of instance `index`.
 */
function mockEnginePids(workerPid: number, index: number): number[] {
  const ps = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' });
  const rows = ps
    .split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((match) => match !== null)
    .map(([, pid, ppid, args]) => ({ pid: Number(pid), ppid: Number(ppid), args: args ?? '' }));
  const guards = new Set(rows.filter((row) => row.ppid === workerPid).map((row) => row.pid));
  return rows
    .filter((row) => guards.has(row.ppid) && row.args.includes(`/engine-${index}.sock`))
    .map((row) => row.pid);
}

// A free port for --base-port; if base+1 is taken the worker picks another, as it should.
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'es-worker-cli-'));
}

describe('es-worker (built binary, real mock engines, fake scheduler)', () => {
  it('runs TP=4 on 8 GPUs as two authenticated mock engines and drains on SIGTERM before stopping them', async () => {
    const scheduler = await startFakeScheduler(200, 'top secret');
    cleanups.push(() => scheduler.close());
    const dir = tempDir();
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, 'top secret\n');
    chmodSync(secretFile, 0o600);
    const worker = runWorker(
      [
        '--engine',
        'mock',
        '--model',
        '/models/llama',
        '--served-model-name',
        'llama',
        '--tensor-parallel-size',
        '4',
        '--gpus-per-node',
        '8',
        '--base-port',
        String(await freePort()),
        '--log-dir',
        join(dir, 'logs'),
        '--engine-extra-args=--ttft 0 --tokens-per-second 0',
      ],
      {
        ES_SCHEDULER_URL: scheduler.url,
        ES_DEPLOYMENT: 'llama-dep',
        ES_SECRET_FILE: secretFile,
        SLURM_JOB_ID: '777',
        SLURM_RESTART_COUNT: '1',
        CUDA_VISIBLE_DEVICES: '',
      },
    );
    await expect
      .poll(() => scheduler.of('heartbeat').filter((e) => e.body.state === 'ready').length, {
        timeout: 15_000,
      })
      .toBeGreaterThanOrEqual(2);
    const registrations = scheduler.of('register').map((e) => e.body as unknown as RegisterRequest);
    expect(registrations.map((r) => r.gpus).sort()).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    for (const r of registrations) {
      expect(r).toMatchObject({
        deployment: 'llama-dep',
        jobId: '777',
        restartCount: 1,
        engine: 'mock',
        model: '/models/llama',
        host: '127.0.0.1',
      });
    }
    // Every request signed (checked by the fake scheduler), nothing reusable sent.
    expect(scheduler.calls.map((e) => e.signature)).toEqual(scheduler.calls.map(() => 'ok'));
    expect(scheduler.calls.filter((e) => e.authorization !== undefined)).toEqual([]);
    // Both engines answer, streaming included, and only with the derived engine key.
    for (const r of registrations) {
      const client = new OpenAI({
        baseURL: `http://${r.host}:${r.port}/v1`,
        apiKey: deriveEngineKey('top secret', '777'),
        maxRetries: 0,
      });
      const stream = await client.chat.completions.create({
        model: 'llama',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 5,
        stream: true,
      });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      expect(text).toBe(
        expectedGeneration(
          { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
          { maxTokens: 5 },
        ).text,
      );
      const outsider = new OpenAI({
        baseURL: `http://${r.host}:${r.port}/v1`,
        apiKey: 'guess',
        maxRetries: 0,
      });
      await expect(outsider.models.list()).rejects.toMatchObject({ status: 401 });
    }
    const loads = scheduler.of('heartbeat').map((e) => e.body.load as { running?: number });
    expect(loads.some((load) => typeof load?.running === 'number')).toBe(true);

    const pids = registrations.flatMap((r) => mockEnginePids(worker.child.pid ?? 0, r.index));
    expect(pids).toHaveLength(2);
    const aliveAtDrain: boolean[] = [];
    scheduler.onCall = (call) => {
      if (call.route === 'drain') aliveAtDrain.push(pids.every(alive));
    };

    const sigtermAt = Date.now();
    worker.child.kill('SIGTERM');
    await expect.poll(() => scheduler.of('drain').length, { timeout: 2000 }).toBe(2);
    const drains = scheduler.of('drain');
    // The notice is the first thing the worker does: engines are still up when it lands.
    expect(Math.max(...drains.map((d) => d.at)) - sigtermAt).toBeLessThan(1000);
    expect(aliveAtDrain).toEqual([true, true]);
    expect(await worker.exited).toBe(0);
    expect(scheduler.of('deregister')).toHaveLength(2);
    expect(pids.filter(alive)).toEqual([]);
  });

  it('starts vllm from PATH with the exact argv and CUDA_VISIBLE_DEVICES for each slice', async () => {
    const scheduler = await startFakeScheduler(200);
    cleanups.push(() => scheduler.close());
    const dir = tempDir();
    const bin = join(dir, 'bin');
    const record = join(dir, 'record');
    // A fake vllm: say it is 0.12.0 when asked (the worker asks once, for
    // --disable-log-requests), else record how it was started, then sit there like a loading
    // engine.
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'vllm'),
      `#!/bin/sh\nif [ "$1" = --version ]; then echo 0.12.0; exit 0; fi\nprintf '%s\\n' "CUDA=$CUDA_VISIBLE_DEVICES" "$@" > "${record}.$$"\nexec sleep 300\n`,
    );
    chmodSync(join(bin, 'vllm'), 0o755);
    // The seed's worker flags are named like vLLM's and passed through unchanged.
    const sharedFlags = [
      '--tensor-parallel-size',
      '2',
      '--gpu-memory-utilization',
      '0.85',
      '--max-model-len',
      '8192',
      '--served-model-name',
      'llama3',
    ];
    const worker = runWorker(
      [
        '--scheduler-url',
        scheduler.url,
        '--model',
        'meta-llama/Llama-3-70B-Instruct',
        ...sharedFlags,
        '--base-port',
        String(await freePort()),
        '--engine-extra-args=--enable-prefix-caching --chat-template "{{ a b }}" --x=\'it s\'',
        '--log-dir',
        join(dir, 'logs'),
      ],
      { PATH: `${bin}:${process.env.PATH ?? ''}`, CUDA_VISIBLE_DEVICES: '2,3,6,7' },
    );
    await expect.poll(() => scheduler.of('register').length, { timeout: 10_000 }).toBe(2);
    await expect.poll(() => readdirSync(dir).filter((f) => f.startsWith('record.')).length).toBe(2);
    const records = readdirSync(dir).filter((f) => f.startsWith('record.'));
    // `exec sleep` keeps the shell's pid, which the file name carries.
    const sleeps = records.map((f) => Number(f.slice('record.'.length)));
    const recorded = records
      .map((f) => readFileSync(join(dir, f), 'utf8').trimEnd().split('\n'))
      .sort((a, b) => (a[0] ?? '').localeCompare(b[0] ?? ''));
    const registrations = scheduler.of('register').map((e) => e.body as unknown as RegisterRequest);
    const indexOf = (gpus: string) => registrations.find((r) => r.gpus.join(',') === gpus)?.index;
    const socketOf = (line: string | undefined) => line?.replace(/^--uds=/, '') ?? '';
    expect(recorded).toEqual(
      ['2,3', '6,7'].map((gpus, i) => [
        `CUDA=${gpus}`,
        'serve',
        'meta-llama/Llama-3-70B-Instruct',
        // vLLM 0.12 listens on a Unix socket in the worker's private directory.
        `--uds=${socketOf(recorded[i]?.[3])}`,
        // The seed's flags, as --flag=value (a value that starts with "-" stays a value).
        '--tensor-parallel-size=2',
        '--gpu-memory-utilization=0.85',
        '--max-model-len=8192',
        '--served-model-name=llama3',
        // The seed's engine flag (no --disable-log-requests: vLLM 0.12 removed it).
        '--trust-remote-code',
        '--enable-prefix-caching',
        '--chat-template',
        '{{ a b }}',
        '--x=it s',
      ]),
    );
    for (const [i, line] of recorded.entries()) {
      expect(socketOf(line[3])).toMatch(
        new RegExp(`/es-[A-Za-z0-9]{6}/engine-${indexOf(['2,3', '6,7'][i] ?? '')}\\.sock$`),
      );
    }
    expect(sleeps.every(alive)).toBe(true);
    worker.child.kill('SIGINT');
    expect(await worker.exited).toBe(0);
    expect(scheduler.of('drain')).toHaveLength(2);
    expect(sleeps.filter(alive)).toEqual([]);
  });

  it('names the flag and the fix on bad input, exit code 2', async () => {
    const worker = runWorker([
      '--model',
      'm',
      '--tensor-parallel-size',
      '3',
      '--gpus-per-node',
      '2',
      '--scheduler-url',
      'http://127.0.0.1:9',
    ]);
    expect(await worker.exited).toBe(2);
    expect(worker.output()).toMatch(
      /tensor parallel size 3 needs 3 GPUs but this job has 2 \(0,1, from gpus-per-node\): choose a tensor parallel size of at most 2/,
    );
    const missing = runWorker(['--model', 'm'], { ES_SCHEDULER_URL: '' });
    expect(await missing.exited).toBe(2);
    expect(missing.output()).toMatch(/--scheduler-url is required/);
  });
});
