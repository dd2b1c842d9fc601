import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RegisterRequest } from '@es/protocol';
import {
  cancelByNamePrefix,
  preempt,
  processAlive,
  runSlurm,
  startFakeScheduler,
  uniqueJobPrefix,
  waitForJob,
} from '@es/testkit';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
// What the engine answers; this app does not depend on @es/mock-engine (its package.json is
// not ours to change), so its source is imported directly.
import { enginePidsBehind } from '../../../packages/chaos/src/faults.js';
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

const CLI = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));
const prefix = uniqueJobPrefix('worker');

afterAll(async () => {
  await cancelByNamePrefix(prefix);
});

// Any free port for --base-port: a taken base+1 is the worker's job to avoid.
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

describe('es-worker inside a real SLURM job', () => {
  it('runs TP=4 as two mock engines on GPUs 0-3 and 4-7, and drains within 2 s of preemption', async () => {
    const scheduler = await startFakeScheduler(250);
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-slurm-'));
    const script = join(dir, 'job.sh');
    const out = join(dir, 'job.out');
    // The shape of the scheduler's batch script: the worker is a job step, so it gets the
    // SIGTERM of a preemption. Graces fit the dev cluster's KillWait of 5 s.
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        `exec srun --ntasks=1 ${process.execPath} ${CLI} --scheduler-url ${scheduler.url} \\`,
        `  --engine mock --model mock-model --tensor-parallel-size 4 --base-port ${await freePort()} \\`,
        `  --log-dir ${join(dir, 'logs')} --drain-grace 1 --kill-grace 2 \\`,
        "  --engine-extra-args='--ttft 0 --tokens-per-second 0'",
        '',
      ].join('\n'),
    );
    const submitted = await runSlurm('sbatch', [
      '--parsable',
      '-p',
      'low',
      '--gpus-per-node=8',
      '-J',
      `${prefix}job`,
      '-o',
      out,
      script,
    ]);
    expect(submitted.exitCode, submitted.stderr).toBe(0);
    const jobId = submitted.stdout.trim().split(';')[0] ?? '';

    try {
      await expect
        .poll(() => scheduler.of('heartbeat').filter((e) => e.body.state === 'ready').length, {
          timeout: 90_000,
          interval: 250,
        })
        .toBeGreaterThanOrEqual(2);
      const registrations = scheduler
        .of('register')
        .map((e) => e.body as unknown as RegisterRequest);
      expect(registrations.map((r) => r.gpus).sort()).toEqual([
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ]);
      expect(registrations.every((r) => r.jobId === jobId && r.restartCount === 0)).toBe(true);
      for (const r of registrations) {
        const client = new OpenAI({
          baseURL: `http://${r.host}:${r.port}/v1`,
          apiKey: 'EMPTY',
          maxRetries: 0,
        });
        // What the engine answers to these requests, as @es/mock-engine defines it.
        const hello = { kind: 'chat', messages: [{ role: 'user', content: 'hello' }] } as const;
        const full = await client.chat.completions.create({
          model: 'mock-model',
          messages: [{ role: 'user', content: 'hello' }],
          max_tokens: 3,
        });
        expect(full.choices[0]?.message.content).toBe(
          expectedGeneration(hello, { maxTokens: 3 }).text,
        );
        const stream = await client.chat.completions.create({
          model: 'mock-model',
          messages: [{ role: 'user', content: 'hello' }],
          max_tokens: 4,
          stream: true,
        });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
        expect(text).toBe(expectedGeneration(hello, { maxTokens: 4 }).text);
      }
      // The engines behind the two fronts the worker registered.
      const engines = (
        await Promise.all(registrations.map((r) => enginePidsBehind(r.port, r.index)))
      ).flat();
      expect(engines).toHaveLength(2);

      const job = await waitForJob(jobId, (j) => j.JobState === 'RUNNING');
      const node = job.NodeList ?? '';
      const preemptedAt = Date.now();
      await preempt(node, 20, `${prefix}preempt`);
      await expect
        .poll(() => scheduler.of('drain').length, { timeout: 15_000, interval: 50 })
        .toBe(2);
      const drainedAt = Math.max(...scheduler.of('drain').map((d) => d.at));
      // The worker logs the signal with pino's epoch-ms `time`: measure from there.
      await expect.poll(() => readFileSync(out, 'utf8'), { timeout: 10_000 }).toMatch(/SIGTERM/);
      const signalLine = readFileSync(out, 'utf8')
        .split('\n')
        .find((line) => line.includes('SIGTERM'));
      const signalAt = (JSON.parse(signalLine ?? '{}') as { time?: number }).time ?? preemptedAt;
      console.log(
        `drain notice ${drainedAt - signalAt} ms after SIGTERM, ${drainedAt - preemptedAt} ms after the preempting sbatch`,
      );
      expect(drainedAt - signalAt).toBeLessThan(2_000);
      expect(drainedAt - preemptedAt).toBeLessThan(10_000);
      // The engines are gone once the step has ended (drained or killed by SLURM).
      await expect.poll(() => engines.filter(processAlive), { timeout: 15_000 }).toEqual([]);
    } finally {
      await cancelByNamePrefix(prefix);
      await scheduler.close();
    }
  });
});
