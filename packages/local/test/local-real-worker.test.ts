/**
 * The pool with real worker processes: registry + worker API on a socket + reconciler over
 * the local provider (what the embedded default runs), running apps/worker (built) with the mock engine. Covers the worker
 * protocol end to end and a scheduler restart that re-adopts its local jobs.
 */
import type { Server } from 'node:http';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PoolEvent, Reconciler, Registry } from '@es/pool';
import { createReconciler, createRegistry, createWorkerApi } from '@es/pool';
import { WORKER_ENV, deriveEngineKey, deriveKeys } from '@es/protocol';
import { until } from '@es/testkit';
import type { LocalProvider } from '../src/index.js';
import { createLocalProvider } from '../src/index.js';

const WORKER_CLI = fileURLToPath(new URL('../../../apps/worker/dist/cli.mjs', import.meta.url));

interface Scheduler {
  registry: Registry;
  reconciler: Reconciler;
  provider: LocalProvider;
  events: PoolEvent[];
  port: number;
  stop(kill: boolean): Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];
let dir: string;

beforeAll(() => {
  if (!existsSync(WORKER_CLI)) throw new Error(`${WORKER_CLI} missing: run pnpm build first`);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** What apps/scheduler does, reduced to the pool: one process, one port, local backend. */
async function startScheduler(port: number, secretFile: string, schedulerId: string) {
  const keys = deriveKeys('test-secret');
  const events: PoolEvent[] = [];
  const registry = createRegistry({
    heartbeatIntervalMs: 300,
    deployments: [
      {
        name: 'mock',
        model: 'mock-model',
        engine: 'mock',
        gpusPerNode: 4,
        tensorParallelSize: 2,
        maxNodes: 2,
      },
    ],
    upstreamKey: ({ jobId }) => deriveEngineKey('test-secret', jobId),
  });
  registry.on((e) => events.push(e));
  const api = createWorkerApi(registry, { workerKey: keys.workerKey });
  const server = serve({ fetch: api.fetch, port, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = createLocalProvider({
    nodes: 2,
    gpusPerNode: 4,
    killGraceMs: 2_000,
    stateFile: join(dir, 'local-jobs.json'),
    adoptedPollMs: 100,
  });
  const reconciler = createReconciler({
    registry,
    provider,
    schedulerId,
    intervalMs: 300,
    heartbeatTimeoutMs: 5_000,
    buildNodeRequest: (d) => ({
      command: [
        process.execPath,
        WORKER_CLI,
        ...['--engine', d.engine, '--model', d.model],
        ...['--tensor-parallel-size', String(d.tensorParallelSize)],
        ...['--gpus-per-node', String(d.gpusPerNode), '--base-port', '0'],
        ...['--drain-grace', '1', '--kill-grace', '1', '--log-level', 'warn'],
      ],
      env: { [WORKER_ENV.schedulerUrl]: url, [WORKER_ENV.secretFile]: secretFile },
      logDir: join(dir, 'logs'),
    }),
  });
  reconciler.start();
  let stopped = false;
  const scheduler: Scheduler = {
    registry,
    reconciler,
    provider,
    events,
    port: (server.address() as AddressInfo).port,
    async stop(kill) {
      if (stopped) return;
      stopped = true;
      await reconciler.stop();
      await provider.close({ kill });
      (server as Server).closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  cleanups.push(() => scheduler.stop(true));
  return scheduler;
}

const ready = (s: Scheduler, n: number) => () => {
  const workers = s.registry.routable('mock');
  return workers.length === n ? workers : undefined;
};

describe('pool + local provider + apps/worker (mock engine)', () => {
  it('serves from every slice, and a restarted scheduler re-adopts its jobs without submitting', async () => {
    dir = mkdtempSync(join(tmpdir(), 'es-pool-real-'));
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, 'test-secret\n', { mode: 0o600 });
    const schedulerId = `t${process.pid}`;
    const first = await startScheduler(0, secretFile, schedulerId);

    const workers = await until(ready(first, 4));
    for (const worker of workers) {
      // Each job's engines take that job's key only.
      const jobId = worker.id.split('.')[0] ?? '';
      expect(worker.upstreamKey).toBe(deriveEngineKey('test-secret', jobId));
      const otherJob = deriveEngineKey('test-secret', `${jobId}0`);
      const refused = await fetch(`${worker.baseUrl}/v1/models`, {
        headers: { authorization: `Bearer ${otherJob}` },
      });
      expect(refused.status).toBe(401);
      const res = await fetch(`${worker.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${worker.upstreamKey ?? ''}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ model: 'mock-model', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { choices: unknown[] }).choices).toHaveLength(1);
    }
    // The ready workers' slices (on a busy machine a job may have been replaced meanwhile: its
    // gone workers stay listed by the registry).
    const readyIds = new Set(workers.map((w) => w.id));
    const gpus = first.registry
      .workers('mock')
      .filter((w) => readyIds.has(w.id))
      .map((w) => w.gpus.join(','));
    expect(gpus.sort()).toEqual(['0,1', '0,1', '2,3', '2,3']);
    const jobIds = new Set(workers.map((w) => w.id.split('.')[0]));
    expect(jobIds.size).toBe(2);

    // Restart: the old scheduler leaves its jobs running, a new one on the same port adopts
    // them; workers get 404 on their next heartbeat and register again.
    await first.stop(false);
    const second = await startScheduler(first.port, secretFile, schedulerId);
    const back = await until(ready(second, 4), 10_000);
    expect(new Set(back.map((w) => w.id.split('.')[0]))).toEqual(jobIds);
    expect(second.events.filter((e) => e.type === 'submitted')).toEqual([]);
    expect((await second.provider.list({ names: [`es-${schedulerId}-mock`] })).length).toBe(2);
  });

  it('takes a preempted node out of routing at once and replaces a node whose worker was SIGKILLed', async () => {
    dir = mkdtempSync(join(tmpdir(), 'es-pool-real-'));
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, 'test-secret\n', { mode: 0o600 });
    const s = await startScheduler(0, secretFile, `p${process.pid}`);
    const workers = await until(ready(s, 4));
    const [victim, other] = [...new Set(workers.map((w) => w.id.split('.')[0]!))];

    // Preemption: SIGTERM → the worker's drain notice → out of routing well before it exits.
    const preemptedAt = Date.now();
    expect(s.provider.preempt(victim!)).toBe(true);
    await until(() =>
      s.registry.routable('mock').some((w) => w.id.startsWith(`${victim}.`)) ? undefined : true,
    );
    expect(Date.now() - preemptedAt).toBeLessThan(2_000);
    const afterPreempt = await until(() => {
      const r = ready(s, 4)();
      return r?.every((w) => !w.id.startsWith(`${victim}.`)) ? r : undefined;
    });

    // A worker daemon killed outright: its job fails, the engines go with it, a new job comes.
    const pid = s.registry.workers('mock').find((w) => w.jobId === other)?.pid;
    expect(pid).toBeTypeOf('number');
    process.kill(pid!, 'SIGKILL');
    const replaced = await until(() => {
      const r = ready(s, 4)();
      return r?.every((w) => !w.id.startsWith(`${other}.`)) ? r : undefined;
    });
    const jobs = await s.provider.list({ names: [`es-p${process.pid}-mock`] });
    expect(jobs.filter((j) => j.state === 'RUNNING')).toHaveLength(2);
    expect(jobs.find((j) => j.id === victim)?.state).toBe('PREEMPTED');
    expect(jobs.find((j) => j.id === other)?.state).toBe('FAILED');
    expect(jobs).toHaveLength(4);
    expect(new Set([...afterPreempt, ...replaced].map((w) => w.id.split('.')[0])).size).toBe(3);
    expect(s.events.filter((e) => e.type === 'submitted')).toHaveLength(4);
  });
});
