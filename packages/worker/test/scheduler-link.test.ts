import { serve } from '@hono/node-server';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRegistry, createWorkerApi } from '@es/pool';
import { deriveKeys } from '@es/protocol';
import type { HeartbeatRequest, RegisterRequest } from '@es/protocol';
import { TEST_SECRET, startFakeScheduler } from '@es/testkit';
import type { FakeScheduler } from '@es/testkit';
import { systemClock } from '../src/clock.js';
import { initialHealth } from '../src/health.js';
import type { HealthState } from '../src/health.js';
import { freePort } from '../src/index.js';
import { FencedError, createSchedulerLink } from '../src/scheduler-link.js';
import type { LinkedInstance } from '../src/scheduler-link.js';
import { createFakeClock } from './fake-clock.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function scheduler(heartbeatMs: number): Promise<FakeScheduler> {
  const started = await startFakeScheduler(heartbeatMs);
  cleanups.push(() => started.close());
  return started;
}

/** Job 1234, incarnation 2, of deployment `default` on node1. */
const IDENTITY = {
  deployment: 'default',
  jobId: '1234',
  restartCount: 2,
  engine: 'mock',
  model: 'mock-model',
  node: 'node1',
} as const;

/** An engine instance as the link sees it, its health set by the test. */
function instance(health: Partial<HealthState> = {}) {
  const budgets: number[] = [];
  const linked: LinkedInstance & { health: HealthState } = {
    index: 0,
    gpus: [0, 1],
    logFile: '/logs/engine-1234.2.0.log',
    host: '127.0.0.1',
    port: 8001,
    health: { ...initialHealth(), phase: 'loading', ...health },
    load: { running: 1, waiting: 0 },
    refreshLoad: async (timeoutMs) => {
      budgets.push(timeoutMs);
      return linked.load;
    },
  };
  return { linked, budgets };
}

function link(schedulerUrl: string, extra: { schedulerUrlFile?: string } = {}) {
  const clock = createFakeClock();
  const warnings: string[] = [];
  const fatal: unknown[] = [];
  const created = createSchedulerLink({
    schedulerUrl,
    ...extra,
    workerKey: deriveKeys(TEST_SECRET).workerKey,
    requestTimeoutMs: 5_000,
    identity: IDENTITY,
    clock,
    logger: { info: () => undefined, error: () => undefined, warn: (_, m) => warnings.push(m) },
    onFatal: (error) => fatal.push(error),
  });
  cleanups.push(() => created.halt());
  return { link: created, clock, warnings, fatal };
}

describe('the scheduler link, on a fake clock against a fake scheduler', () => {
  it('registers, then heartbeats at the interval the scheduler gave, on the clock', async () => {
    const fake = await scheduler(5_000);
    const { link: linked, clock } = link(fake.url);
    const { linked: engine, budgets } = instance({ phase: 'ready', readySince: 1 });
    await linked.register(engine);
    expect(linked.workerId(0)).toBe('1234.2.0');
    const registration = fake.calls[0]!;
    expect(registration.signature).toBe('ok');
    expect(registration.authorization).toBeUndefined();
    expect(registration.body as unknown as RegisterRequest).toEqual({
      deployment: 'default',
      jobId: '1234',
      restartCount: 2,
      index: 0,
      host: '127.0.0.1',
      port: 8001,
      gpus: [0, 1],
      engine: 'mock',
      model: 'mock-model',
      node: 'node1',
      state: 'ready',
      logFile: '/logs/engine-1234.2.0.log',
      pid: process.pid,
    });
    linked.startHeartbeats(engine);
    expect(clock.pending()).toEqual([5_000]);
    expect(fake.calls.filter((call) => call.route === 'heartbeat')).toEqual([]);
    await clock.fireNext((ms) => ms === 5_000);
    const beat = await fake.waitFor((call) => call.route === 'heartbeat');
    expect(beat.body as unknown as HeartbeatRequest).toEqual({
      state: 'ready',
      restartCount: 2,
      load: { running: 1, waiting: 0 },
    });
    // The load is read within half the interval, at most 2 s.
    expect(budgets).toEqual([2_000]);
    // The next one is due an interval later; none after halt.
    expect(await clock.nextTimer()).toBe(5_000);
    linked.halt();
    expect(clock.pending()).toEqual([]);
  });

  it('reports the reason and no load when not ready; registers again on 404; stops on 409', async () => {
    const fake = await scheduler(5_000);
    const { link: linked, fatal, warnings } = link(fake.url);
    const { linked: engine, budgets } = instance({
      phase: 'unready',
      reason: 'engine not answering /health (3 probes in a row)',
    });
    await linked.register(engine);
    await linked.heartbeat(engine);
    expect(fake.calls[1]?.body).toEqual({
      state: 'loading',
      restartCount: 2,
      reason: 'engine not answering /health (3 probes in a row)',
    });
    expect(budgets).toEqual([]);
    fake.forget.add('1234.2.0');
    await linked.heartbeat(engine);
    expect(warnings).toContain('scheduler forgot this instance; registering again');
    expect(fake.calls.map((call) => call.route)).toEqual([
      'register',
      'heartbeat',
      'heartbeat',
      'register',
    ]);
    fake.fence = true;
    await linked.heartbeat(engine);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toBeInstanceOf(FencedError);
    expect((fatal[0] as Error).message).toBe('job 1234 incarnation 2 has ended: exit');
  });

  it('retries registration after 0.5, 1, 1.5 s of clock time, reading the URL file at most once a second', async () => {
    const nobody = `http://127.0.0.1:${await freePort('127.0.0.1')}`;
    const urlFile = join(mkdtempSync(join(tmpdir(), 'es-link-url-')), 'scheduler-url');
    writeFileSync(urlFile, 'login1:8780\n');
    const { link: linked, clock, warnings } = link(nobody, { schedulerUrlFile: urlFile });
    const registering = linked.register(instance().linked);
    const ignored = `${urlFile} names "login1:8780", not an http(s) URL; ignored`;
    expect(await clock.fireNext()).toBe(500);
    expect(await clock.fireNext()).toBe(1_000);
    // Read at the first attempt, not at the second (0.5 s later), again at the third.
    await vi.waitFor(() => expect(warnings.filter((w) => w === ignored)).toHaveLength(2));
    expect(await clock.nextTimer()).toBe(1_500);
    expect(
      warnings.filter((w) => w === 'scheduler unreachable; retrying registration'),
    ).toHaveLength(3);
    // A scheduler appears at the address the file names now: the next attempt goes there.
    const fake = await scheduler(5_000);
    writeFileSync(urlFile, `${fake.url}\n`);
    await clock.fireNext();
    await clock.fireNext();
    await registering;
    expect(linked.workerId(0)).toBe('1234.2.0');
    expect(warnings).toContain(
      `the scheduler is unreachable at ${nobody} and ${urlFile} names ${fake.url}: following it`,
    );
  });

  it('a heartbeat refused at an address the URL file has left is sent again at once to the new one', async () => {
    const urlFile = join(mkdtempSync(join(tmpdir(), 'es-link-url-')), 'scheduler-url');
    const before = await scheduler(1_000);
    writeFileSync(urlFile, `${before.url}\n`);
    const { link: linked, clock } = link(before.url, { schedulerUrlFile: urlFile });
    const { linked: engine } = instance({ phase: 'ready' });
    await linked.register(engine);
    const start = clock.now();
    // The scheduler restarts on another port and writes its new address.
    await before.close();
    const after = await scheduler(1_000);
    writeFileSync(urlFile, `${after.url}\n`);
    await linked.heartbeat(engine);
    // Within that one heartbeat, no clock time passing: refused, followed, sent again,
    // answered 404 by the new scheduler (it does not know the worker), registered there.
    expect(after.calls.map((call) => call.route)).toEqual(['heartbeat', 'register']);
    expect(clock.now()).toBe(start);
  });

  it('sends drain and deregister notices with the reason, even after halt', async () => {
    const fake = await scheduler(5_000);
    const { link: linked } = link(fake.url);
    await linked.register(instance().linked);
    linked.halt();
    await linked.drain(['1234.2.0'], 'SIGTERM');
    await linked.deregister(['1234.2.0'], 'SIGTERM');
    expect(fake.calls.slice(1).map((call) => [call.route, call.workerId, call.body])).toEqual([
      ['drain', '1234.2.0', { reason: 'SIGTERM' }],
      ['deregister', '1234.2.0', { reason: 'SIGTERM' }],
    ]);
  });
});

describe('the scheduler link against a real worker API that started after the worker signed', () => {
  it('retries a registration refused as stale (its clock behind a restarted scheduler): not fatal', async () => {
    const { workerKey } = deriveKeys(TEST_SECRET);
    const registry = createRegistry({
      deployments: [
        {
          name: 'default',
          model: 'mock-model',
          engine: 'mock',
          tensorParallelSize: 2,
          gpusPerNode: 2,
          maxNodes: 1,
        },
      ],
    });
    // As if the scheduler's clock were 1.2 s ahead of the worker's, just after its restart.
    const api = createWorkerApi(registry, { workerKey, startedAt: Date.now() + 1_200 });
    const server = serve({ fetch: api.fetch, hostname: '127.0.0.1', port: 0 });
    await new Promise((resolve) => server.once('listening', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const warnings: string[] = [];
    const fatal: unknown[] = [];
    const linked = createSchedulerLink({
      schedulerUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      workerKey,
      requestTimeoutMs: 5_000,
      identity: IDENTITY,
      clock: systemClock,
      logger: { info: () => undefined, error: () => undefined, warn: (_, m) => warnings.push(m) },
      onFatal: (error) => fatal.push(error),
    });
    cleanups.push(() => linked.halt());
    await linked.register(instance({ phase: 'ready', readySince: 1 }).linked);
    expect(linked.workerId(0)).toBe('1234.2.0');
    expect(warnings).toContain(
      'the scheduler refused the signature as not fresh; retrying registration',
    );
    expect(fatal).toEqual([]);
    expect(registry.worker('1234.2.0')?.state).toBe('ready');
  });
});
