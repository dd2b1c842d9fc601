import { afterEach, describe, expect, it } from 'vitest';
import type { HeartbeatRequest } from '@es/protocol';
import { createWorker } from '../src/index.js';
import { createFakeClock } from './fake-clock.js';
import { fakeVllmOnPath, groupAlive, startFakeScheduler } from './fake-scheduler.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('createWorker on a fake clock', () => {
  it('holds a stop for drainGraceMs of clock time while an engine stays busy, then stops it and deregisters', async () => {
    // A fake `vllm` whose /metrics always shows requests in flight.
    const { bin, env } = fakeVllmOnPath();
    const fake = await startFakeScheduler(150);
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
      env,
      clock,
    });
    cleanups.push(() => worker.killEnginesSync());
    await worker.start();
    // Readiness probes (every 1 s by default) and heartbeats run only as the clock moves.
    while (worker.instances()[0]?.state !== 'ready') await clock.fireNext();
    await fake.waitFor(
      (call) =>
        call.route === 'heartbeat' && (call.body as unknown as HeartbeatRequest).state === 'ready',
    );
    const pid = worker.instances()[0]?.pid ?? 0;

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
