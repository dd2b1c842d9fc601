/**
 * The scheduler in-process, exactly as `es-scheduler` wires it (`createScheduler` of
 * `@es/scheduler`: registry, reconciler, worker API, proxy and admin on one port), with real
 * apps/worker processes and mock engines on the local backend or in jobs of the SLURM dev
 * cluster. The admin API, `/metrics` and the `es` CLI are exercised against it end to end;
 * the admin's routes alone are tested in packages/admin over a fake pool.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { pino } from 'pino';
import { deriveKeys } from '@es/protocol';
// apps/scheduler does not depend on @es/client (the `es` CLI); its tests run its code.
import { runCli, type StatusResponse } from '../../../packages/client/src/index.js';
import { resolveConfig } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { createScheduler, type Scheduler } from '@es/scheduler';
import type { LogLine } from './harness.js';

// The shared test helpers (apps/scheduler does not depend on @es/testkit; its tests run its code).
export { metric, until } from '../../../packages/testkit/src/index.js';

/** A scheduler running in this process. */
export interface AdminTestScheduler {
  url: string;
  dir: string;
  logDir: string;
  secretFile: string;
  /** The admin token derived from the secret file (no `--admin-key` is given). */
  adminKey: string;
  scheduler: Scheduler;
  /** Its pino log lines so far. */
  logs: LogLine[];
  /** Preempt a local job (SIGTERM, then SIGKILL after the grace; ends PREEMPTED). */
  preempt(jobId: string): boolean;
  /** Resolves once `POST /api/v1/admin/stop` has stopped the scheduler. */
  stopped: Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link startAdminTestScheduler}. */
export interface AdminTestSchedulerOptions {
  maxNodes?: number;
  /** Local "nodes" (default 2). */
  nodes?: number;
  /** `slurm`: the dev cluster (SLURM_CONF in the environment), partition `low`, 8 GPUs a node. */
  backend?: 'local' | 'slurm';
  /** Scheduler id (job names are `es-<id>-mock`). */
  schedulerId?: string;
  /** Mock engine flags, e.g. `--die-mid-stream 2` (es-worker `--engine-extra-args`). */
  engineExtraArgs?: string;
}

/** Start the scheduler on a free port; its workers become ready within seconds. */
export async function startAdminTestScheduler(
  options: AdminTestSchedulerOptions = {},
): Promise<AdminTestScheduler> {
  const dir = mkdtempSync(join(tmpdir(), 'es-admin-e2e-'));
  const logDir = join(dir, 'logs');
  const secretFile = join(dir, 'secret');
  const slurm = options.backend === 'slurm';
  const gpusPerNode = slurm ? 8 : 4;
  // One deployment named `mock` (the flags name a deployment after its model).
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      name: 'mock',
      model: 'mock-model',
      engine: 'mock',
      maxNodes: options.maxNodes ?? 2,
      gpusPerNode,
      tensorParallelSize: gpusPerNode / 2,
      engineExtraArgs: options.engineExtraArgs ?? '',
      ...(slurm ? { partition: 'low', timeLimit: 60 } : {}),
    }),
  );
  const schedulerId = options.schedulerId ?? `adm${process.pid}${Math.floor(Math.random() * 1e4)}`;
  const argv = [
    ...['--config', config, '--backend', slurm ? 'slurm' : 'local'],
    ...['--host', '127.0.0.1', '--port', '0', '--log-dir', logDir, '--secret-file', secretFile],
    ...['--scheduler-id', schedulerId, '--local-nodes', String(options.nodes ?? 2)],
    ...['--health-check-interval', '0.3', '--node-acquire-interval', '0.5'],
    ...['--heartbeat-timeout', '5'],
    // The in-process layout on purpose: these tests read what the proxy does from the
    // scheduler's own registry (a worker's in-flight count, continuation events) and
    // /metrics right after a request ends, which es-proxy processes only report a second
    // later. The data plane itself is tested in data-plane.e2e.test.ts.
    ...['--proxy-processes', '0'],
  ];
  // Hermetic: no ES_ADMIN_KEY or ES_API_KEY of the environment running the tests.
  const settings = resolveConfig(await parseFlags(argv), {});

  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') logs.push(JSON.parse(line) as LogLine);
      }
      done();
    },
  });
  let onStopped: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (onStopped = resolve));
  const scheduler = await createScheduler(settings, {
    logger: pino({ level: 'info' }, sink),
    onStopped: () => onStopped(),
  });
  const adminKey = deriveKeys(readFileSync(secretFile, 'utf8')).adminToken;

  let closed: Promise<void> | undefined;
  return {
    url: scheduler.url,
    dir,
    logDir,
    secretFile,
    adminKey,
    scheduler,
    logs,
    // The instrumented provider keeps the local provider's own methods.
    preempt: (jobId) =>
      (scheduler.provider as unknown as { preempt(id: string): boolean }).preempt(jobId),
    stopped,
    close: () =>
      (closed ??= (async () => {
        await scheduler.close({ cancelJobs: true });
        rmSync(dir, { recursive: true, force: true });
      })()),
  };
}

/** Ready workers of the `mock` deployment, sorted, when there are `n`. */
export function readyWorkers(s: AdminTestScheduler, n: number): () => string[] | undefined {
  return () => {
    const ids = s.scheduler.registry
      .workers('mock')
      .filter((w) => w.state === 'ready')
      .map((w) => w.id);
    return ids.length === n ? ids.sort() : undefined;
  };
}

/** Run the `es` CLI in-process against `s`, with its admin key. */
export async function esCli(
  s: AdminTestScheduler,
  ...argv: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env: { ES_SCHEDULER_URL: s.url, ES_ADMIN_KEY: s.adminKey },
  });
  return { code, stdout, stderr };
}

async function adminGet(s: AdminTestScheduler, path: string): Promise<Response> {
  const res = await fetch(`${s.url}${path}`, {
    headers: { authorization: `Bearer ${s.adminKey}` },
  });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** `GET /metrics` with the admin key. */
export async function scrape(s: AdminTestScheduler): Promise<string> {
  return (await adminGet(s, '/metrics')).text();
}

/** `GET /api/v1/admin/status` with the admin key. */
export async function adminStatus(s: AdminTestScheduler): Promise<StatusResponse> {
  return (await (await adminGet(s, '/api/v1/admin/status')).json()) as StatusResponse;
}

/**
 * Stream one chat completion through `s` with the official `openai` client, reading it to its
 * end: the content seen, and the error the stream ended with (undefined when it ended well).
 */
export async function streamChat(
  s: AdminTestScheduler,
  prompt: string,
): Promise<{ text: string; error: unknown }> {
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: 'mock-model',
    messages: [{ role: 'user', content: prompt }],
    max_tokens: 16,
    stream: true,
  });
  let text = '';
  try {
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    return { text, error: undefined };
  } catch (error) {
    return { text, error };
  }
}
