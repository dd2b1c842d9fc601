/**
 * The scheduler's wiring in-process, as apps/scheduler does it, with `mountAdmin` added:
 * registry + local provider + reconciler + worker API + proxy + admin on one port, running
 * the built apps/worker with the mock engine.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';
import OpenAI from 'openai';
import { createLocalProvider, type LocalProvider } from '@es/local';
import {
  WORKER_ENV,
  createReconciler,
  createRegistry,
  createWorkerApi,
  deriveKeys,
  type DeploymentConfig,
  type NodeProvider,
  type Reconciler,
  type Registry,
} from '@es/pool';
import { createProxyApp, startProxyServer } from '@es/proxy';
import { createSlurmProvider } from '@es/slurm';
import { runCli, type StatusResponse } from '@es/client';
import { mountAdmin, type MountedAdmin } from '../src/index.js';

export const WORKER_CLI = fileURLToPath(
  new URL('../../../apps/worker/dist/cli.mjs', import.meta.url),
);

/** A running in-process scheduler. */
export interface TestScheduler {
  url: string;
  dir: string;
  logDir: string;
  secretFile: string;
  adminKey: string;
  registry: Registry;
  reconciler: Reconciler;
  /** The instrumented provider the reconciler uses. */
  provider: NodeProvider;
  /** The local provider (preempt ...), when the backend is local. */
  local: LocalProvider | undefined;
  admin: MountedAdmin;
  /** Resolves once `POST /api/v1/admin/stop` was handled. */
  stopped: Promise<{ cancelJobs: boolean }>;
  close(): Promise<void>;
}

/** Options of {@link startTestScheduler}. */
export interface TestSchedulerOptions {
  maxNodes?: number;
  /** Local "nodes" (default 2). */
  nodes?: number;
  /** Traffic sample length for `/api/v1/admin/series` (default 1 000 ms). */
  sampleIntervalMs?: number;
  /** `slurm`: the dev cluster (SLURM_CONF in the environment), partition `low`, 8 GPUs a node. */
  backend?: 'local' | 'slurm';
  /** Scheduler id (job names are `es-<id>-mock`). */
  schedulerId?: string;
  /** Mock engine flags, e.g. `--die-mid-stream 2` (es-worker `--engine-extra-args`). */
  engineExtraArgs?: string;
}

/** Start the wiring; workers become ready within a few seconds. */
export async function startTestScheduler(
  options: TestSchedulerOptions = {},
): Promise<TestScheduler> {
  if (!existsSync(WORKER_CLI)) throw new Error(`${WORKER_CLI} missing: run pnpm build first`);
  const dir = mkdtempSync(join(tmpdir(), 'es-admin-'));
  const logDir = join(dir, 'logs');
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `admin-test-secret-${process.pid}\n`, { mode: 0o600 });
  const keys = deriveKeys(`admin-test-secret-${process.pid}`);
  const schedulerId = options.schedulerId ?? `adm${process.pid}${Math.floor(Math.random() * 1e4)}`;
  const slurm = options.backend === 'slurm';
  const gpusPerNode = slurm ? 8 : 4;
  const deployment: DeploymentConfig = {
    name: 'mock',
    model: 'mock-model',
    engine: 'mock',
    gpusPerNode,
    tensorParallelSize: gpusPerNode / 2,
    maxNodes: options.maxNodes ?? 2,
    upstreamApiKey: keys.engineApiKey,
  };
  if (slurm) {
    deployment.cluster = { partition: 'low', requeue: true };
    deployment.timeLimitMinutes = 60;
  }

  const registry = createRegistry({
    heartbeatIntervalMs: 300,
    deployments: [deployment],
  });
  const app = new Hono();
  const admin = mountAdmin(app, {
    registry,
    logDir,
    adminKey: keys.adminToken,
    drainGraceMs: 5_000,
    metrics: { sampleIntervalMs: options.sampleIntervalMs ?? 1_000, defaultMetrics: true },
  });
  const local = slurm
    ? undefined
    : createLocalProvider({
        nodes: options.nodes ?? 2,
        gpusPerNode,
        killGraceMs: 2_000,
        killOnClose: true,
        stateFile: join(dir, 'local-jobs.json'),
      });
  const provider: NodeProvider = admin.instrumentProvider(
    local ?? createSlurmProvider({ env: { SLURM_CONF: process.env.SLURM_CONF ?? '' } }),
  );
  const proxy = createProxyApp({ pool: registry, onRequestComplete: admin.onRequestComplete });
  app.route('/', createWorkerApi(registry, { workerToken: keys.workerToken }));
  app.route('/', proxy);
  const server = await startProxyServer({ fetch: app.fetch, port: 0 });

  const reconciler = createReconciler({
    registry,
    provider,
    schedulerId,
    intervalMs: 500,
    heartbeatTimeoutMs: 5_000,
    buildNodeRequest: (d) => ({
      command: [
        process.execPath,
        WORKER_CLI,
        ...['--deployment', d.name, '--engine', d.engine, '--model', d.model],
        ...['--tensor-parallel-size', String(d.tensorParallelSize)],
        ...['--gpus-per-node', String(d.gpusPerNode), '--base-port', '0'],
        ...['--drain-grace', '1', '--kill-grace', '1', '--log-dir', logDir],
        // One argv element: a value that starts with -- would read as a flag of its own.
        ...(options.engineExtraArgs ? [`--engine-extra-args=${options.engineExtraArgs}`] : []),
      ],
      env: { [WORKER_ENV.schedulerUrl]: server.url, [WORKER_ENV.secretFile]: secretFile },
      logDir,
    }),
  });
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      await reconciler.stop();
      if (slurm) await reconciler.cancelAll().catch(() => undefined);
      await server.close(1_000);
      await proxy.close();
      await local?.close({ kill: true });
      admin.close();
      rmSync(dir, { recursive: true, force: true });
    })());
  let onStop: (value: { cancelJobs: boolean }) => void = () => undefined;
  const stopped = new Promise<{ cancelJobs: boolean }>((resolve) => (onStop = resolve));
  admin.attach({
    reconciler,
    provider,
    queueDepth: () => proxy.queueDepth(),
    stop: async (o) => {
      if (o.cancelJobs) await reconciler.cancelAll();
      onStop(o);
    },
  });
  reconciler.start();
  return {
    url: server.url,
    dir,
    logDir,
    secretFile,
    adminKey: keys.adminToken,
    registry,
    reconciler,
    provider,
    local,
    admin,
    stopped,
    close,
  };
}

/** Poll until `fn` returns a value other than undefined. */
export async function until<T>(
  fn: () => T | undefined | Promise<T | undefined>,
  what: string,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Ready workers of the `mock` deployment, when there are `n`. */
export function readyWorkers(s: TestScheduler, n: number): () => string[] | undefined {
  return () => {
    const ids = s.registry
      .workers('mock')
      .filter((w) => w.state === 'ready')
      .map((w) => w.id);
    return ids.length === n ? ids.sort() : undefined;
  };
}

/** Sum of the samples of `name` whose labels include `labels`. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const found = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      found.set(pair[1] ?? '', pair[2] ?? '');
    }
    if (Object.entries(labels).every(([k, v]) => found.get(k) === v)) sum += Number(m[4]);
  }
  return sum;
}

/** Run the `es` CLI in-process against `s`, with its admin key. */
export async function esCli(
  s: TestScheduler,
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

async function adminGet(s: TestScheduler, path: string): Promise<Response> {
  const res = await fetch(`${s.url}${path}`, {
    headers: { authorization: `Bearer ${s.adminKey}` },
  });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** `GET /metrics` with the admin key. */
export async function scrape(s: TestScheduler): Promise<string> {
  return (await adminGet(s, '/metrics')).text();
}

/** `GET /api/v1/admin/status` with the admin key. */
export async function adminStatus(s: TestScheduler): Promise<StatusResponse> {
  return (await (await adminGet(s, '/api/v1/admin/status')).json()) as StatusResponse;
}

/**
 * Stream one chat completion through `s` with the official `openai` client, reading it to its
 * end: the content seen, and the error the stream ended with (undefined when it ended well).
 */
export async function streamChat(
  s: TestScheduler,
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
