/**
 * The README's run mode, end to end: the built `es-scheduler` with `--backend local
 * --engine mock` (worker processes and mock engines on this machine, no SLURM), used
 * through the official `openai` client and the seed's status endpoints, then stopped.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FAST_FLAGS,
  descendants,
  killStartedSchedulers,
  runSchedulerToExit,
  startSchedulerProcess,
  waitFor,
  type SchedulerProcess,
} from './harness.js';
import { processAlive } from '../../../packages/testkit/src/index.js';
// What the engine answers; this app does not depend on @es/mock-engine (its package.json is
// not ours to change), so its source is imported directly.
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

// scripts/run.sh's default flags.
const RUN_MODE = [
  '--backend',
  'local',
  '--engine',
  'mock',
  '--model',
  'mock-model',
  '--max-nodes',
  '2',
  '--tensor-parallel-size',
  '4',
];

const dir = mkdtempSync(join(tmpdir(), 'es-sched-local-e2e-'));
let scheduler: SchedulerProcess;
let client: OpenAI;

beforeAll(async () => {
  scheduler = await startSchedulerProcess({
    args: [...RUN_MODE, ...FAST_FLAGS, '--scheduler-id', 'e2e-local'],
    logDir: join(dir, 'logs'),
  });
  client = new OpenAI({ baseURL: `${scheduler.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  // 2 nodes × (8 GPUs / TP 4) = 4 engine instances.
  await waitFor(
    '4 ready workers',
    () => scheduler.clusterStatus(),
    (s) => s.ready_workers === 4,
    30_000,
  );
}, 60_000);

afterAll(async () => {
  await killStartedSchedulers();
});

describe('es-scheduler --backend local --engine mock', () => {
  /**
   * A client that sends a 40 MB body on a raw socket with `Connection: close`, writing all
   * of it without waiting for an answer, as an uploading client does. Prints `ok` (or the
   * socket's first error code, e.g. EPIPE) and what the server sent before the connection
   * ended.
   */
  const UPLOADER = `
    const net = require('node:net');
    const [port, bytes, chunked] = process.argv.slice(1).map(Number);
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => (answer += d));
    let failure = '';
    socket.on('error', (e) => (failure ||= e.code));
    socket.on('close', () => process.stdout.write((failure || 'ok') + '\\n' + answer));
    socket.write('POST /v1/chat/completions HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n' +
      'Content-Type: application/json\\r\\nConnection: close\\r\\n' +
      (chunked ? 'Transfer-Encoding: chunked\\r\\n\\r\\n' : 'Content-Length: ' + bytes + '\\r\\n\\r\\n'));
    const piece = Buffer.alloc(1024 * 1024, 0x20);
    const frame = chunked
      ? Buffer.concat([Buffer.from(piece.length.toString(16) + '\\r\\n'), piece, Buffer.from('\\r\\n')])
      : piece;
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += piece.length;
        if (!socket.write(frame)) return socket.once('drain', pump);
      }
      if (chunked) socket.write('0\\r\\n\\r\\n');
    };
    pump();
  `;
  const upload = (url: string, bytes: number, chunked: boolean): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        ['-e', UPLOADER, new URL(url).port, String(bytes), chunked ? '1' : '0'],
        { timeout: 30_000 },
        (error, stdout) => (error ? reject(error) : resolve(stdout)),
      );
    });

  it('serves chat, completions, embeddings, models and streams through /v1', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['mock-model']);

    const chat = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 5,
    });
    expect(chat.choices[0]?.message.role).toBe('assistant');
    expect(chat.choices[0]?.message.content).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'hello' }] },
        { maxTokens: 5 },
      ).text,
    );
    expect(chat.usage?.completion_tokens).toBe(5);

    const completion = await client.completions.create({
      model: 'mock-model',
      prompt: 'Once upon a time',
      max_tokens: 3,
    });
    expect(completion.choices[0]?.text).toBe(
      expectedGeneration({ kind: 'completion', prompt: 'Once upon a time' }, { maxTokens: 3 }).text,
    );

    const embeddings = await client.embeddings.create({
      model: 'mock-model',
      input: ['one', 'two'],
    });
    expect(embeddings.data).toHaveLength(2);
    expect(embeddings.data[0]?.embedding.length).toBeGreaterThan(0);

    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'stream please' }],
      max_tokens: 6,
      stream: true,
    });
    let text = '';
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'stream please' }] },
        { maxTokens: 6 },
      ).text,
    );
    expect(finish).toBe('length');
  });

  it('spreads requests over the ready workers', async () => {
    type Row = { requests_served: number };
    const served = async () =>
      (await scheduler.get<{ workers: Row[] }>('/workers')).workers.map((w) => w.requests_served);
    // Reports of the earlier tests' requests may still arrive: at least these 16 more.
    const before = await served();
    await Promise.all(
      Array.from({ length: 16 }, () =>
        client.chat.completions.create({
          model: 'mock-model',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 2,
        }),
      ),
    );
    // Counted from es-proxy's reports (one a second): all 16 within a few.
    const sum = (counts: number[]) => counts.reduce((n, c) => n + c, 0);
    const after = await waitFor(
      'the 16 requests counted per worker',
      served,
      (counts) => sum(counts) - sum(before) >= 16,
      10_000,
    );
    expect(after.filter((n, i) => n > (before[i] ?? 0)).length).toBeGreaterThan(1);
  });

  it('answers /health, /cluster_status and /workers with the seed field names', async () => {
    const health = await scheduler.get<Record<string, unknown>>('/health');
    expect(health).toMatchObject({ status: 'ok' });

    const status = await scheduler.clusterStatus();
    expect(status).toMatchObject({
      model: 'mock-model',
      engine: 'mock',
      max_nodes: 2,
      tensor_parallel_size: 4,
      dp_per_node: 2,
      total_nodes_active: 2,
      total_workers: 4,
      ready_workers: 4,
      loading_workers: 0,
      offline_workers: 0,
      pending_slurm_jobs: 0,
    });
    expect(status.workers).toHaveLength(4);
    for (const w of status.workers) {
      expect(Object.keys(w)).toEqual(
        expect.arrayContaining([
          'worker_id',
          'hostname',
          'ip_address',
          'port',
          'base_url',
          'status',
          'engine',
          'model_name',
          'n_gpus',
          'tensor_parallel_size',
          'slurm_job_id',
          'registered_at',
          'last_heartbeat',
          'requests_served',
        ]),
      );
      expect(w).toMatchObject({
        status: 'READY',
        engine: 'mock',
        model_name: 'mock-model',
        n_gpus: 4,
        tensor_parallel_size: 4,
      });
      expect(w.base_url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      expect(Number.isNaN(Date.parse(w.last_heartbeat))).toBe(false);
    }
    // Each node's two instances hold disjoint GPU slices.
    const byJob = new Map<string, number[][]>();
    for (const w of status.workers) {
      byJob.set(w.slurm_job_id, [...(byJob.get(w.slurm_job_id) ?? []), w.gpus]);
    }
    for (const slices of byJob.values()) {
      expect(slices.map((s) => s.join(',')).sort()).toEqual(['0,1,2,3', '4,5,6,7']);
    }

    const { workers } = await scheduler.get<{ workers: Record<string, unknown>[] }>('/workers');
    expect(workers).toHaveLength(4);
    for (const w of workers) {
      expect(Object.keys(w).sort()).toEqual(
        expect.arrayContaining(['base_url', 'hostname', 'requests_served', 'status', 'worker_id']),
      );
    }
  });

  it('answers 413 (not a reset) to 40 MB sent with Connection: close, declared or chunked', async () => {
    const url = scheduler.url;
    const size = 40 * 1024 * 1024;
    const answers: string[] = [];
    for (let i = 0; i < 3; i++) {
      answers.push(await upload(url, size, false));
      answers.push(await upload(url, size, true));
    }
    // Every byte written without EPIPE or a reset, then the whole 413 read.
    expect(answers.map((a) => a.split('\n')[0])).toEqual(Array(6).fill('ok'));
    expect(answers.map((a) => a.split('\r\n')[0]!.split('\n')[1])).toEqual(
      Array(6).fill('HTTP/1.1 413 Payload Too Large'),
    );
    const body = answers[0]!.slice(answers[0]!.indexOf('\r\n\r\n') + 4);
    expect(JSON.parse(body)).toMatchObject({
      error: { code: 'request_too_large', type: 'invalid_request_error' },
    });
  });

  it('stops on SIGTERM with exit 0 and leaves no worker or engine process behind', async () => {
    const tree = descendants(scheduler.pid);
    // Workers and their engines (at least one worker per node and one engine per instance).
    expect(tree.length).toBeGreaterThanOrEqual(2 + 4);
    const exit = await scheduler.stop('SIGTERM', 20_000);
    expect(exit).toEqual({ code: 0, signal: null });
    const left = await waitFor(
      'every worker and engine process gone',
      () => tree.filter(processAlive),
      (pids) => pids.length === 0,
      10_000,
    );
    expect(left).toEqual([]);
    expect(scheduler.logs.some((l) => /SIGTERM/.test(l.msg))).toBe(true);
  });
});

describe('a scheduler that comes back on another port', () => {
  it('is found by its running workers through <log dir>/worker-url: nothing resubmitted', async () => {
    const logDir = join(dir, 'moved-logs');
    const args = [...RUN_MODE.slice(0, -4), '--max-nodes', '1', '--tensor-parallel-size', '4'];
    // Each start picks a free port; both share the log dir (local jobs, URL file).
    const start = () =>
      startSchedulerProcess({
        args: [...args, ...FAST_FLAGS, '--scheduler-id', 'e2e-moved'],
        logDir,
      });
    const urlFile = () => readFileSync(join(logDir, 'scheduler-url'), 'utf8');
    // The workers follow the worker listener's URL (a port of its own), the es CLI the other.
    const workerUrlFile = () => readFileSync(join(logDir, 'worker-url'), 'utf8');
    const first = await start();
    expect(urlFile()).toBe(`${first.url}\n`);
    const firstWorkerUrl = workerUrlFile();
    expect(firstWorkerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\n$/);
    expect(firstWorkerUrl).not.toBe(`${first.url}\n`);
    const before = await waitFor(
      '2 ready workers',
      () => first.readyWorkerIds(),
      (ids) => ids.length === 2,
      30_000,
    );
    // SIGKILL: the local jobs (worker processes) keep running, as SLURM jobs would.
    await first.stop('SIGKILL');
    const second = await start();
    expect(second.port).not.toBe(first.port);
    expect(urlFile()).toBe(`${second.url}\n`);
    expect(workerUrlFile()).not.toBe(firstWorkerUrl);
    const after = await waitFor(
      'the same 2 workers ready at the new address',
      () => second.readyWorkerIds(),
      (ids) => ids.length === 2,
      20_000,
    );
    expect(after.sort()).toEqual(before.sort());
    expect(second.logs.filter((l) => l.event === 'submitted')).toHaveLength(0);
    await second.stop('SIGTERM', 20_000);
    // A stopped scheduler takes its URLs back.
    expect(existsSync(join(logDir, 'scheduler-url'))).toBe(false);
    expect(existsSync(join(logDir, 'worker-url'))).toBe(false);
  });
});

describe('es-scheduler refuses bad input with exit code 2', () => {
  it('names an unknown flag', async () => {
    const result = await runSchedulerToExit([...RUN_MODE, '--max-nodez', '3']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/max-nodez/);
  });

  it('names a flag with a value outside its choices', async () => {
    const result = await runSchedulerToExit(['--backend', 'local', '--engine', 'tgi']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/engine/);
    expect(result.stderr).toMatch(/tgi/);
  });

  it('names the invalid field of a config file and what it expected', async () => {
    const config = join(dir, 'bad.json');
    writeFileSync(
      config,
      JSON.stringify({ model: 'mock-model', engine: 'mock', max_nodes: 'three' }),
    );
    const result = await runSchedulerToExit(['--backend', 'local', '--config', config]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/max_nodes|maxNodes/);
    expect(result.stderr).toMatch(/number/);
    expect(result.stderr).toMatch(/three/);
  });

  it('names a config file field the scheduler does not know', async () => {
    const config = join(dir, 'unknown.json');
    writeFileSync(config, JSON.stringify({ model: 'mock-model', max_nodse: 2 }));
    const result = await runSchedulerToExit(['--backend', 'local', '--config', config]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/max_nodse|maxNodse/);
  });
});
