import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import OpenAI from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { expectedGeneration } from '@es/mock-engine';
import { deriveEngineKey } from '@es/protocol';
import type { HeartbeatRequest, RegisterRequest } from '@es/protocol';
import { TEST_SECRET, startFakeScheduler } from '@es/testkit';
import { WorkerError, createWorker } from '../src/index.js';
import type { Worker, WorkerOptions } from '../src/index.js';
import { groupAlive, openStream } from './engine-helpers.js';

const SECRET = TEST_SECRET;
/** Job 1234's engine key: what its fronts require. */
const ENGINE_KEY = deriveEngineKey(SECRET, '1234');
const withKey = { headers: { authorization: `Bearer ${ENGINE_KEY}` } };
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(overrides: Partial<WorkerOptions> = {}, heartbeatMs = 150) {
  const scheduler = await startFakeScheduler(heartbeatMs);
  cleanups.push(() => scheduler.close());
  const logDir = mkdtempSync(join(tmpdir(), 'es-worker-test-'));
  const worker = createWorker({
    schedulerUrl: scheduler.url,
    deployment: 'default',
    engine: 'mock',
    model: 'mock-model',
    jobId: '1234',
    restartCount: 2,
    basePort: 0,
    gpusPerNode: 1,
    visibleDevices: '',
    secret: SECRET,
    logDir,
    probeIntervalMs: 50,
    restartBackoffMs: 50,
    drainGraceMs: 2000,
    killGraceMs: 2000,
    engineExtraArgs: '--tokens-per-second 0 --ttft 0',
    ...overrides,
  });
  cleanups.push(async () => {
    worker.killEnginesSync();
    await worker.stop('test cleanup');
  });
  return { scheduler, worker, logDir };
}

function engineUrl(worker: Worker, index = 0): string {
  const instance = worker.instances()[index];
  if (!instance) throw new Error(`no instance ${index}`);
  return `http://127.0.0.1:${instance.port}`;
}

const heartbeatOf =
  (id: string, test: (body: HeartbeatRequest) => boolean) =>
  (call: { route: string; workerId: string; body: Record<string, unknown> }) =>
    call.route === 'heartbeat' &&
    call.workerId === id &&
    test(call.body as unknown as HeartbeatRequest);

describe('worker against a fake scheduler and real mock engines', () => {
  it('registers each slice as loading, reports ready with load, and the engines answer', async () => {
    const { scheduler, worker, logDir } = await setup({
      tensorParallelSize: 2,
      gpusPerNode: 4,
      visibleDevices: '2,3,6,7',
      engineExtraArgs: '--load-delay 400 --tokens-per-second 20 --ttft 0',
    });
    await worker.start();

    const registrations = scheduler.calls.filter((call) => call.route === 'register');
    expect(registrations.map((call) => call.workerId).sort()).toEqual(['1234.2.0', '1234.2.1']);
    for (const call of registrations) {
      const body = call.body as unknown as RegisterRequest;
      // Signed (checked by the fake scheduler), and nothing reusable sent.
      expect(call.signature).toBe('ok');
      expect(call.authorization).toBeUndefined();
      expect(body).toMatchObject({
        deployment: 'default',
        jobId: '1234',
        restartCount: 2,
        host: '127.0.0.1',
        engine: 'mock',
        model: 'mock-model',
        state: 'loading',
      });
      expect(body.gpus).toEqual(body.index === 0 ? [2, 3] : [6, 7]);
      expect(body.logFile).toBe(join(logDir, `engine-1234.2.${body.index}.log`));
    }
    // Still loading (--load-delay 400): the front answers, the engine behind it not yet.
    expect((await fetch(`${engineUrl(worker)}/health`, withKey)).status).toBe(502);
    // Without the job's key the front refuses every path, /health included.
    expect((await fetch(`${engineUrl(worker)}/health`)).status).toBe(401);
    const otherJob = { authorization: `Bearer ${deriveEngineKey(SECRET, '1235')}` };
    expect((await fetch(`${engineUrl(worker)}/health`, { headers: otherJob })).status).toBe(401);

    const ready = await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    expect((ready.body as unknown as HeartbeatRequest).load).toEqual({
      running: 0,
      waiting: 0,
      kvCacheUsage: 0,
    });
    await scheduler.waitFor(heartbeatOf('1234.2.1', (b) => b.state === 'ready'));
    // Everything the engine printed went to the instance's own log file.
    expect(readFileSync(join(logDir, 'engine-1234.2.0.log'), 'utf8')).toContain('listening');

    // The fronts enforce the job's key and serve the OpenAI API, streaming included.
    const stream = await openStream(engineUrl(worker, 1), ENGINE_KEY, 40);
    const since = Date.now();
    // While the stream runs (40 tokens at 20/s), heartbeats carry running = 1.
    const busy = await scheduler.waitFor(
      (call) => call.at > since && heartbeatOf('1234.2.1', (b) => b.load?.running === 1)(call),
    );
    expect(busy).toBeDefined();
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    // Exactly the engine's answer to openStream's request: all 40 tokens, streamed whole.
    const expected = expectedGeneration(
      { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
      { maxTokens: 40 },
    );
    expect(text).toBe(expected.text);
    const denied = new OpenAI({
      baseURL: `${engineUrl(worker)}/v1`,
      apiKey: 'wrong',
      maxRetries: 0,
    });
    await expect(denied.models.list()).rejects.toMatchObject({ status: 401 });
  });

  it('reports a crashed engine at once and restarts it', async () => {
    const { scheduler, worker } = await setup({
      engineExtraArgs: '--crash-after 1 --tokens-per-second 0 --ttft 0',
      maxRestarts: 2,
    });
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    const firstPid = worker.instances()[0]?.pid;

    const client = new OpenAI({
      baseURL: `${engineUrl(worker)}/v1`,
      apiKey: ENGINE_KEY,
      maxRetries: 0,
    });
    const crashAt = Date.now();
    await client.completions.create({ model: 'mock-model', prompt: 'x', max_tokens: 2 });
    const report = await scheduler.waitFor(
      (call) => call.at >= crashAt && heartbeatOf('1234.2.0', (b) => b.state === 'loading')(call),
    );
    // "At once": well before the next regular heartbeat would have carried it.
    expect(report.at - crashAt).toBeLessThan(1000);
    expect((report.body as unknown as HeartbeatRequest).reason).toMatch(
      /exited \(code 3\).*restart 1\/2/,
    );

    const back = await scheduler.waitFor(
      (call) => call.at > report.at && heartbeatOf('1234.2.0', (b) => b.state === 'ready')(call),
    );
    expect(back).toBeDefined();
    // The regular heartbeat loop survives the engine restart (it is not an engine timer):
    // heartbeats keep coming well after the restart's own reports.
    const steady = await scheduler.waitFor(
      (call) =>
        call.at > back.at + 1000 && heartbeatOf('1234.2.0', (b) => b.state === 'ready')(call),
    );
    expect(steady).toBeDefined();
    const secondPid = worker.instances()[0]?.pid;
    expect(secondPid).toBeDefined();
    expect(secondPid).not.toBe(firstPid);
    expect(groupAlive(firstPid ?? 0)).toBe(false);
  });

  it('stops retrying an engine that keeps dying and reports it failed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-bin-'));
    const dying = join(dir, 'dying-engine.mjs');
    writeFileSync(dying, 'console.error("out of memory"); process.exit(7);\n');
    const { scheduler, worker } = await setup({ engineBin: dying, maxRestarts: 2 });
    await worker.start();
    const failed = await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'failed'));
    expect((failed.body as unknown as HeartbeatRequest).reason).toMatch(
      /exited \(code 7\); not restarting after 3 failure/,
    );
    const starts = scheduler.calls.filter(heartbeatOf('1234.2.0', (b) => b.state === 'loading'));
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(worker.instances()[0]?.state).toBe('failed');
    expect(readFileSync(worker.instances()[0]?.logFile ?? '', 'utf8')).toContain('out of memory');
  });

  it('registers again when the scheduler forgets it (404)', async () => {
    const { scheduler, worker } = await setup();
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    scheduler.forget.add('1234.2.0');
    const since = Date.now();
    const again = await scheduler.waitFor((call) => call.route === 'register' && call.at >= since);
    // It comes back with its current state, not as a fresh loading engine.
    expect((again.body as unknown as RegisterRequest).state).toBe('ready');
  });

  it('follows the URL file to a scheduler that came back elsewhere and registers there', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-url-'));
    const urlFile = join(dir, 'scheduler-url');
    const { scheduler, worker } = await setup({ schedulerUrlFile: urlFile });
    writeFileSync(urlFile, `${scheduler.url}\n`);
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    // The scheduler is requeued onto another node: the old address refuses connections and
    // the new scheduler publishes its URL in the same file.
    const moved = await startFakeScheduler(150);
    cleanups.push(() => moved.close());
    await scheduler.close();
    writeFileSync(urlFile, `${moved.url}\n`);
    // It heartbeats the new scheduler, which does not know it (404), and registers again.
    const registration = await moved.waitFor((call) => call.route === 'register', 10_000);
    expect(registration.workerId).toBe('1234.2.0');
    expect(registration.body).toMatchObject({ state: 'ready', restartCount: 2 });
    await moved.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
  });

  it('ignores a URL file that names no http(s) URL and keeps trying the scheduler it knows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-url-'));
    const urlFile = join(dir, 'scheduler-url');
    const warnings: string[] = [];
    const { scheduler, worker } = await setup({
      schedulerUrlFile: urlFile,
      logger: { info: () => undefined, error: () => undefined, warn: (_, m) => warnings.push(m) },
    });
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    writeFileSync(urlFile, 'login1:8780\n');
    // Unreachable: a refused heartbeat makes it read the file, which it must not follow.
    await scheduler.close();
    await vi.waitFor(
      () =>
        expect(warnings).toContain(`${urlFile} names "login1:8780", not an http(s) URL; ignored`),
      { timeout: 10_000, interval: 50 },
    );
    expect(warnings.some((m) => m.includes('following it'))).toBe(false);
  });

  it('takes a hung engine out of routing after 3 failed liveness probes, back when it answers, restarts it when it stays silent', async () => {
    // hungRestartMs leaves the test time to see the engine out of routing and resume it
    // before the worker gives up on it: 2 s left ~1.2 s, too little on a busy machine.
    const hungRestartMs = 5_000;
    const { scheduler, worker } = await setup(
      { probeIntervalMs: 50, livenessTimeoutMs: 200, livenessFailures: 3, hungRestartMs },
      100,
    );
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    const pid = worker.instances()[0]!.pid!;
    // Hung: the process is stopped, the kernel still accepts connections; nothing answers.
    process.kill(-pid, 'SIGSTOP');
    const stoppedAt = Date.now();
    const unready = await scheduler.waitFor(
      (call) => call.at >= stoppedAt && heartbeatOf('1234.2.0', (b) => b.state === 'loading')(call),
      10_000,
    );
    // Taken out by its probes (3 × 200 ms by design), not by the hung-engine restart.
    expect(unready.at - stoppedAt).toBeLessThan(hungRestartMs);
    expect((unready.body as unknown as HeartbeatRequest).reason).toBe(
      'engine not answering /health (3 probes in a row)',
    );
    process.kill(-pid, 'SIGCONT');
    await scheduler.waitFor(
      (call) =>
        call.at > unready.at &&
        heartbeatOf('1234.2.0', (b) => b.state === 'ready' && b.reason === undefined)(call),
    );
    expect(worker.instances()[0]!.pid).toBe(pid);
    // Silent for longer than hungRestartMs: killed and started again.
    process.kill(-pid, 'SIGSTOP');
    await vi.waitFor(() => expect(worker.instances()[0]!.pid).not.toBe(pid), {
      timeout: hungRestartMs + 10_000,
      interval: 50,
    });
    // Its group is gone (an orphaned engine is reaped by PID 1, which may take a moment).
    await vi.waitFor(() => expect(groupAlive(pid)).toBe(false), { timeout: 5_000, interval: 50 });
    await vi.waitFor(() => expect(worker.instances()[0]!.state).toBe('ready'), {
      timeout: 10_000,
      interval: 50,
    });
  });

  it('exits with code 1 and kills its engines when fenced (409)', async () => {
    const { scheduler, worker } = await setup();
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    const pid = worker.instances()[0]?.pid ?? 0;
    scheduler.fence = true;
    const exit = await worker.done;
    expect(exit.code).toBe(1);
    // The scheduler's own reason, not a guess.
    expect(exit.reason).toBe('fenced by the scheduler: job 1234 incarnation 2 has ended: exit');
    expect(groupAlive(pid)).toBe(false);
    expect(scheduler.calls.some((call) => call.route === 'drain')).toBe(false);
  });

  it('on stop: drain notices first (engines still serving), then engines stopped, then deregister', async () => {
    const { scheduler, worker } = await setup({ gpusPerNode: 2 });
    await worker.start();
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    await scheduler.waitFor(heartbeatOf('1234.2.1', (b) => b.state === 'ready'));
    const pids = worker.instances().map((instance) => instance.pid ?? 0);
    const urls = [engineUrl(worker, 0), engineUrl(worker, 1)];
    const aliveAtDrain: boolean[] = [];
    scheduler.onDrain = async (workerId) => {
      const index = Number(workerId.split('.')[2]);
      const health = await fetch(`${urls[index] ?? ''}/health`, withKey).catch(() => undefined);
      aliveAtDrain.push(health?.status === 200);
    };
    const stoppedAt = Date.now();
    const exit = await worker.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, reason: 'SIGTERM' });

    const drains = scheduler.calls.filter((call) => call.route === 'drain');
    expect(drains.map((call) => call.workerId).sort()).toEqual(['1234.2.0', '1234.2.1']);
    expect(drains.every((call) => call.body.reason === 'SIGTERM')).toBe(true);
    expect(aliveAtDrain).toEqual([true, true]);
    for (const drain of drains) expect(drain.at - stoppedAt).toBeLessThan(500);
    const deregisters = scheduler.calls.filter((call) => call.route === 'deregister');
    expect(deregisters).toHaveLength(2);
    expect(Math.min(...deregisters.map((c) => c.at))).toBeGreaterThanOrEqual(
      Math.max(...drains.map((c) => c.at)),
    );
    for (const pid of pids) expect(groupAlive(pid)).toBe(false);
    // After the drain, heartbeats say `draining` only: the scheduler would otherwise see the
    // instance ready again.
    const lastDrain = Math.max(...drains.map((c) => c.at));
    expect(
      scheduler.calls.filter(
        (c) => c.route === 'heartbeat' && c.at > lastDrain && c.body.state !== 'draining',
      ),
    ).toEqual([]);
  });

  it('picks another port when the planned one is taken and registers that one', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)));
    const taken = (blocker.address() as { port: number }).port;
    const { scheduler, worker } = await setup({ basePort: taken });
    await worker.start();
    const registration = await scheduler.waitFor((call) => call.route === 'register');
    const port = (registration.body as unknown as RegisterRequest).port;
    expect(port).not.toBe(taken);
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    expect((await fetch(`http://127.0.0.1:${port}/health`, withKey)).status).toBe(200);
  });

  it('without a log directory: a fresh private one, never a predictable path; the socket directory goes at the end', async () => {
    const { scheduler, worker } = await setup({ logDir: undefined });
    await worker.start();
    const registration = await scheduler.waitFor((call) => call.route === 'register');
    const logFile = (registration.body as unknown as RegisterRequest).logFile ?? '';
    const dir = dirname(logFile);
    expect(dir).toMatch(new RegExp(`^${tmpdir()}/es-worker-1234-[A-Za-z0-9]{6}$`));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    await scheduler.waitFor(heartbeatOf('1234.2.0', (b) => b.state === 'ready'));
    expect(statSync(logFile).mode & 0o777).toBe(0o600);
    const engine = readFileSync(logFile, 'utf8');
    const socketPath = /listening on unix:(\S+)/.exec(engine)?.[1] ?? '';
    expect(statSync(dirname(socketPath)).mode & 0o777).toBe(0o700);
    await worker.stop('done');
    expect(existsSync(dirname(socketPath))).toBe(false);
  });

  it('rejects a TP size larger than the GPUs, naming the flag', async () => {
    const { worker } = await setup({ tensorParallelSize: 3, gpusPerNode: 2 });
    const error = await worker.start().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WorkerError);
    expect((error as WorkerError).param).toBe('tensor-parallel-size');
    expect((error as WorkerError).message).toMatch(/3/);
    expect((error as WorkerError).message).toMatch(/2/);
  });
});
