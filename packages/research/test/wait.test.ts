import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { waitForReadyWorkers } from '../src/wait.js';

// A scheduler on 127.0.0.1 whose workers are still loading: the wait polls and sleeps.
let url: string;
let checks = 0;
const server = createServer((_req, res) => {
  checks++;
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(
    JSON.stringify({
      ready_workers: 0,
      loading_workers: 2,
      offline_workers: 0,
      pending_slurm_jobs: 1,
    }),
  );
});

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const quiet = () => new Writable({ write: (_chunk, _encoding, done) => done() });

describe('waitForReadyWorkers', () => {
  test('an abort ends the sleep between checks at once, not at the next check', async () => {
    checks = 0;
    const started = Date.now();
    const waiting = waitForReadyWorkers({
      schedulerUrl: url,
      intervalMs: 60_000,
      log: quiet(),
      signal: AbortSignal.timeout(300),
    });
    await expect(waiting).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(checks).toBe(1);
  });

  test('gives up with workers_not_ready after its timeout, having checked again', async () => {
    checks = 0;
    await expect(
      waitForReadyWorkers({ schedulerUrl: url, timeoutMs: 250, intervalMs: 100, log: quiet() }),
    ).rejects.toMatchObject({ code: 'workers_not_ready' });
    expect(checks).toBeGreaterThan(1);
  });
});
