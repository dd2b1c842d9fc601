import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { HeartbeatRequest } from '@es/protocol';
import { startFakeScheduler } from '@es/testkit';
import { createWorker } from '../src/index.js';
import type { WorkerOptions } from '../src/index.js';
import { createFakeClock } from './fake-clock.js';
import { fakeVllmOnPath, groupAlive } from './engine-helpers.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A worker with one fake `vllm` (its /metrics busy until `idleFile` exists) on a fake
 * clock, against a fake scheduler, driven until its instance is ready and heartbeated so.
 */
async function readyWorkerOnFakeClock(options: Partial<WorkerOptions> = {}) {
  const { bin, env } = fakeVllmOnPath();
  const idleFile = `${bin}/idle`;
  // Heartbeats every second: the tests below fire only the drain's polls (<= 250 ms).
  const fake = await startFakeScheduler(1000);
  cleanups.push(() => fake.close());
  const clock = createFakeClock();
  const worker = createWorker({
    schedulerUrl: fake.url,
    deployment: 'default',
    engine: 'vllm',
    model: 'org/model',
    jobId: '77',
    basePort: 0,
    gpusPerNode: 1,
    visibleDevices: '',
    logDir: bin,
    env: { ...env, FAKE_VLLM_IDLE_FILE: idleFile },
    clock,
    ...options,
  });
  cleanups.push(() => worker.killEnginesSync());
  await worker.start();
  // Readiness probes (every 1 s by default) and heartbeats run only as the clock moves.
  while (worker.instances()[0]?.state !== 'ready') await clock.fireNext();
  await fake.waitFor(
    (call) =>
      call.route === 'heartbeat' && (call.body as unknown as HeartbeatRequest).state === 'ready',
  );
  return { fake, clock, worker, idleFile, pid: worker.instances()[0]?.pid ?? 0 };
}

describe('createWorker on a fake clock', () => {
  it('holds a stop for drainGraceMs of clock time while an engine stays busy, then stops it and deregisters', async () => {
    // A fake `vllm` whose /metrics shows requests in flight all along.
    const { fake, clock, worker, pid } = await readyWorkerOnFakeClock();

    let stopped = false;
    const stopping = worker.stop('SIGTERM').then((exit) => {
      stopped = true;
      return exit;
    });
    await fake.waitFor((call) => call.route === 'drain');
    // Busy: it polls every 250 ms of clock time, up to the default grace of 15 s.
    await clock.nextTimer((ms) => ms === 250);
    clock.advance(14_000);
    await clock.nextTimer((ms) => ms === 250);
    // Alive all along: heartbeats keep coming, saying `draining`.
    await fake.waitFor(
      (call) =>
        call.route === 'heartbeat' &&
        (call.body as unknown as HeartbeatRequest).state === 'draining',
    );
    expect(stopped).toBe(false);
    expect(groupAlive(pid)).toBe(true);
    expect(worker.instances()[0]?.state).toBe('draining');
    expect(fake.calls.filter((call) => call.route === 'deregister')).toEqual([]);
    // The grace is over: engines stopped (the fake exits on SIGTERM), then deregistered.
    clock.advance(1_000);
    expect(await stopping).toEqual({ code: 0, reason: 'SIGTERM' });
    expect(groupAlive(pid)).toBe(false);
    expect(worker.instances()[0]?.state).toBe('stopped');
    expect(fake.calls.filter((call) => call.route === 'deregister')).toHaveLength(1);
  });
});

describe('the hand-over on a fake clock (drain → hand-over at grace − margin → engines stopped at grace)', () => {
  // drainGraceMs 10 s and handoverMarginMs 3 s unless the row says otherwise; times are
  // clock ms after the drain notice. `idleAt`: when the engine's /metrics turns idle.
  it.each([
    {
      row: 'busy to the end: hand-over at 7 s, engines stopped at 10 s',
      idleAt: undefined,
      marginMs: 3_000,
      handoverAt: 7_000,
      stopAt: 10_000,
    },
    {
      row: 'idle at 2 s: no hand-over, engines stopped at 2 s',
      idleAt: 2_000,
      marginMs: 3_000,
      handoverAt: undefined,
      stopAt: 2_000,
    },
    {
      row: 'idle at 8 s, inside the margin: hand-over at 7 s, engines stopped at 8 s',
      idleAt: 8_000,
      marginMs: 3_000,
      handoverAt: 7_000,
      stopAt: 8_000,
    },
    {
      row: 'margin 0: hand-over at 10 s, just before the engines stop',
      idleAt: undefined,
      marginMs: 0,
      handoverAt: 10_000,
      stopAt: 10_000,
    },
  ])('$row', async ({ idleAt, marginMs, handoverAt, stopAt }) => {
    const { fake, clock, worker, idleFile, pid } = await readyWorkerOnFakeClock({
      jobId: '78',
      drainGraceMs: 10_000,
      handoverMarginMs: marginMs,
    });

    let stoppedAt: number | undefined;
    const stopping = worker.stop('SIGTERM').then((exit) => {
      stoppedAt = clock.now() - t0;
      return exit;
    });
    await fake.waitFor((call) => call.route === 'drain');
    // The clock has not moved since: the grace starts now.
    const t0 = clock.now();
    // When the scheduler receives the hand-over: clock time, and whether the engine runs.
    let seenHandoverAt: number | undefined;
    let aliveAtHandover = false;
    fake.onCall = (call) => {
      if (call.route !== 'handover') return;
      seenHandoverAt = clock.now() - t0;
      aliveAtHandover = groupAlive(pid);
    };
    // Only the drain's 250 ms polls are fired: the engine's SIGKILL timer (kill grace) is not.
    while (stoppedAt === undefined) {
      const next = clock.pending().find((ms) => ms <= 250);
      if (next === undefined) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      // The engine turns idle for the poll that falls due at `idleAt`.
      if (idleAt !== undefined && clock.now() + next - t0 >= idleAt) writeFileSync(idleFile, '');
      await clock.fireNext((ms) => ms <= 250);
    }
    expect(await stopping).toEqual({ code: 0, reason: 'SIGTERM' });

    expect(seenHandoverAt).toBe(handoverAt);
    expect(stoppedAt).toBe(stopAt);
    const routes = fake.calls.map((call) => call.route).filter((route) => route !== 'heartbeat');
    const workerId = '78.0.0';
    if (handoverAt === undefined) {
      expect(routes).toEqual(['register', 'drain', 'deregister']);
    } else {
      expect(routes).toEqual(['register', 'drain', 'handover', 'deregister']);
      // The engines were still running when the scheduler heard of the hand-over.
      expect(aliveAtHandover).toBe(true);
      expect(fake.calls.find((call) => call.route === 'handover')?.body).toEqual({
        workerIds: [workerId],
        reason: 'SIGTERM',
        stopInMs: 10_000 - handoverAt,
      });
    }
    expect(groupAlive(pid)).toBe(false);
  });

  it('sends the hand-over again when its first message gets no answer, before the engines stop', async () => {
    const { fake, clock, worker, pid } = await readyWorkerOnFakeClock({
      jobId: '79',
      drainGraceMs: 10_000,
      handoverMarginMs: 3_000,
    });
    // The scheduler takes the first hand-over's connection and never answers it.
    fake.dropNext.add('handover');
    const aliveAtHandover: boolean[] = [];
    fake.onCall = (call) => {
      if (call.route === 'handover') aliveAtHandover.push(groupAlive(pid));
    };
    let stopped = false;
    const stopping = worker.stop('SIGTERM').then((exit) => {
      stopped = true;
      return exit;
    });
    await fake.waitFor((call) => call.route === 'drain');
    while (!stopped) {
      const next = clock.pending().find((ms) => ms <= 250);
      if (next === undefined) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      await clock.fireNext((ms) => ms <= 250);
    }
    expect(await stopping).toEqual({ code: 0, reason: 'SIGTERM' });
    const handovers = fake.calls.filter((call) => call.route === 'handover');
    expect(handovers).toHaveLength(2);
    expect(aliveAtHandover).toEqual([true, true]);
    // The second one says how long is left from its own sending.
    expect(handovers[1]?.body).toMatchObject({ workerIds: ['79.0.0'], reason: 'SIGTERM' });
    expect(handovers[1]?.body.stopInMs).toBeLessThanOrEqual(3_000);
    expect(handovers[1]?.body.stopInMs).toBeGreaterThan(0);
  });

  it('refuses a margin that is not shorter than the drain grace, naming the option', () => {
    expect(() =>
      createWorker({
        schedulerUrl: 'http://127.0.0.1:1',
        deployment: 'default',
        engine: 'mock',
        model: 'm',
        jobId: '1',
        drainGraceMs: 4_000,
        handoverMarginMs: 4_000,
      }),
    ).toThrow(
      expect.objectContaining({
        code: 'invalid_option',
        param: 'handover-margin',
        message: expect.stringMatching(/shorter than drainGraceMs \(4000\).*handoverMarginMs 2000/),
      }),
    );
  });
});
