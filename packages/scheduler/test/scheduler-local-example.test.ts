import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { until } from '@es/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import type { Scheduler } from '../src/index.js';
import { startSchedulerLocalExample } from '../../../examples/scheduler-local/main.js';

let scheduler: Scheduler | undefined;
let logDir: string | undefined;

afterEach(async () => {
  await scheduler?.close({ cancelJobs: true });
  scheduler = undefined;
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

describe('examples/scheduler-local', () => {
  it('serves mock-model from a mock engine per GPU of each local node', async () => {
    logDir = mkdtempSync(join(tmpdir(), 'es-scheduler-local-'));
    const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });
    scheduler = await startSchedulerLocalExample({ logDir, logger: pino(quiet) });
    const { registry } = scheduler;
    // 2 nodes × 2 GPUs, TP 1: four engines.
    await until(() => (registry.routable('mock-model').length === 4 ? true : undefined), 60_000);

    const res = await fetch(`${scheduler.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'mock-model',
        messages: [{ role: 'user', content: 'hello' }],
        max_tokens: 8,
      }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: { message: { content: string } }[] };
    expect(body.choices[0]?.message.content.length).toBeGreaterThan(0);
  }, 90_000);
});
