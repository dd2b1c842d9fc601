/**
 * `createScheduler` as an embedder uses it: with a node provider of its own. The scheduler
 * submits through it, serves and says where, writes its URL files, and on close removes them
 * and leaves the embedder's provider (and its jobs) alone.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createLocalProvider, type LocalProvider } from '@es/local';
import { readSchedulerUrlSync, schedulerUrlFilePath, workerUrlFilePath } from '@es/protocol';
import { until } from '@es/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createScheduler, resolveConfig, type Scheduler } from '../src/index.js';

let dir: string | undefined;
let scheduler: Scheduler | undefined;
let provider: LocalProvider | undefined;

afterEach(async () => {
  await scheduler?.close();
  await provider?.close({ kill: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
  scheduler = provider = dir = undefined;
});

describe('createScheduler with an injected provider', () => {
  it('submits through it, serves, writes its URL files and leaves the provider to its owner', async () => {
    dir = mkdtempSync(join(tmpdir(), 'es-create-scheduler-'));
    const logDir = join(dir, 'logs');
    const lines: { msg: string; workersReachUs?: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) {
          if (line.trim() !== '') lines.push(JSON.parse(line) as (typeof lines)[number]);
        }
        done();
      },
    });
    const settings = resolveConfig(
      {
        backend: 'local',
        model: 'mock-model',
        gpusPerNode: 1,
        host: '127.0.0.1',
        port: 0,
        logDir,
        nodeAcquireInterval: 0.2,
        // The in-process layout on purpose: this test is about the injected provider and the
        // URL files; es-proxy's are tested in apps/scheduler/test/data-plane.e2e.test.ts.
        proxyProcesses: 0,
      },
      {},
    );
    provider = createLocalProvider({ nodes: 1, gpusPerNode: 1, killGraceMs: 200 });
    // A "worker" that never registers: this test is about the wiring, not the workers.
    const workerCommand = ['sh', '-c', 'sleep 60', 'sh'];
    scheduler = await createScheduler(settings, {
      logger: pino({ level: 'info' }, sink),
      provider,
      workerCommand,
    });
    const { url, workerPort } = scheduler;

    const workersUrl = `http://127.0.0.1:${workerPort}`;
    const serving = lines.find((l) => l.msg.startsWith('serving /v1'));
    expect(serving).toMatchObject({
      msg: `serving /v1 on ${url} (backend local); workers report to ${workersUrl}`,
      workersReachUs: workersUrl,
    });
    expect(readSchedulerUrlSync(schedulerUrlFilePath(logDir))).toEqual({ kind: 'url', url });
    // Without es-proxy the control URL, which standalone es-proxy processes follow, is it too.
    expect(readSchedulerUrlSync(join(logDir, 'control-url'))).toEqual({ kind: 'url', url });
    expect(readSchedulerUrlSync(workerUrlFilePath(logDir))).toEqual({
      kind: 'url',
      url: workersUrl,
    });
    expect(await (await fetch(`${url}/health`)).json()).toEqual({ status: 'ok', ready_workers: 0 });

    const names = { names: ['es-es-mock-model'] };
    const [job] = await until(async () => {
      const jobs = await provider?.list(names);
      return jobs?.some((j) => j.state === 'RUNNING') ? jobs : undefined;
    });
    expect(job).toBeDefined();

    await scheduler.close();
    expect(readSchedulerUrlSync(schedulerUrlFilePath(logDir))).toEqual({ kind: 'missing' });
    expect(readSchedulerUrlSync(workerUrlFilePath(logDir))).toEqual({ kind: 'missing' });
    expect(readSchedulerUrlSync(join(logDir, 'control-url'))).toEqual({ kind: 'missing' });
    // The embedder's provider is not closed: its job still runs until the embedder ends it.
    const after = await provider.list(names);
    expect(after.find((j) => j.id === job?.id)?.state).toBe('RUNNING');
  });
});
