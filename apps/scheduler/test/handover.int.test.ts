/**
 * The hand-over on drain (issue 13, point 5) across real processes: a real `es-worker`
 * (apps/worker/dist/cli.mjs) with a real mock engine streaming slowly (5 tokens/s) gets
 * SIGTERM with a stream in flight; the scheduler side is the real worker API over a socket
 * on 127.0.0.1 in front of a real registry. The hand-over must reach the registry's
 * `onWorkerLost` listeners (reason `hand-over ...`) at --drain-grace − --handover-margin
 * after the SIGTERM, while the engine still runs; the engine is stopped after it. What the
 * proxy does with the hand-over (continuing the generation) is not asserted here: the
 * listener aborts the stream as the proxy's attempt would be aborted.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createRegistry, createWorkerApi } from '@es/pool';
import type { PoolEvent } from '@es/pool';
import { deriveEngineKey, deriveKeys } from '@es/protocol';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../../packages/testkit/src/index.js';
import { enginePidsBehind } from '../../../packages/chaos/src/faults.js';

const WORKER = fileURLToPath(new URL('../../worker/dist/cli.mjs', import.meta.url));
const MOCK = fileURLToPath(new URL('../../../packages/mock-engine/dist/cli.mjs', import.meta.url));
const DRAIN_GRACE_S = 8;
const MARGIN_S = 3;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  for (const file of [WORKER, MOCK]) {
    if (!existsSync(file)) throw new Error(`${file} missing: run pnpm build first`);
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('hand-over of a real worker on SIGTERM', () => {
  it(`reaches onWorkerLost ("hand-over") ${DRAIN_GRACE_S - MARGIN_S} s after SIGTERM with the stream in flight, before the engine stops`, async () => {
    const secret = 'a hand-over secret';
    const keys = deriveKeys(secret);
    const registry = createRegistry({
      deployments: [
        {
          name: 'm',
          model: 'mock-model',
          engine: 'mock',
          tensorParallelSize: 1,
          gpusPerNode: 1,
          maxNodes: 1,
        },
      ],
      heartbeatIntervalMs: 250,
      upstreamKey: ({ jobId }) => deriveEngineKey(secret, jobId),
    });
    const api = createWorkerApi(registry, { workerKey: keys.workerKey });
    const server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: api.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
    });
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const schedulerUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const dir = mkdtempSync(join(tmpdir(), 'es-handover-'));
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, `${secret}\n`);
    chmodSync(secretFile, 0o600);
    const child = spawn(
      process.execPath,
      [
        WORKER,
        '--engine',
        'mock',
        '--model',
        'mock-model',
        '--gpus-per-node',
        '1',
        '--base-port',
        '0',
        '--log-dir',
        join(dir, 'logs'),
        '--drain-grace',
        String(DRAIN_GRACE_S),
        '--handover-margin',
        String(MARGIN_S),
        '--kill-grace',
        '3',
        '--log-level',
        'warn',
        '--engine-extra-args=--ttft 0 --tokens-per-second 5',
      ],
      {
        env: {
          ...process.env,
          ES_SCHEDULER_URL: schedulerUrl,
          ES_DEPLOYMENT: 'm',
          ES_SECRET_FILE: secretFile,
          SLURM_JOB_ID: '4711',
          SLURM_RESTART_COUNT: '',
          CUDA_VISIBLE_DEVICES: '',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
      child.on('exit', (code) => resolve({ code, at: Date.now() })),
    );
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });

    const routable = await until(
      () => registry.routable('m')[0],
      60_000,
      `a routable worker (worker output: ${output})`,
    );
    const workerId = routable.id;
    const port = Number(new URL(routable.baseUrl).port);
    const [engine] = await enginePidsBehind(port, 0);
    expect(engine, 'the mock engine process').toBeDefined();

    // A generation of 200 tokens at 5 tokens/s: 40 s, far past the drain grace.
    const controller = new AbortController();
    const response = await fetch(`${routable.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${routable.upstreamKey ?? ''}`,
      },
      body: JSON.stringify({
        model: 'mock-model',
        messages: [{ role: 'user', content: 'tell me a long story' }],
        max_tokens: 200,
        stream: true,
      }),
      signal: controller.signal,
    });
    expect(response.status).toBe(200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let streamed = '';
    let streamEnded: number | undefined;
    const reading = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          streamed += decoder.decode(value, { stream: true });
        }
      } catch {
        // Aborted on the hand-over, as the proxy aborts its attempt.
      }
      streamEnded = Date.now();
    })();
    await until(() => (streamed.includes('"content"') ? true : undefined), 30_000, 'first token');

    // What the proxy's listener sees, and the state of things at that moment.
    const lost: {
      workerId: string;
      reason: string;
      at: number;
      engineAlive: boolean;
      state?: string;
    }[] = [];
    registry.onWorkerLost((id, reason) => {
      lost.push({
        workerId: id,
        reason,
        at: Date.now(),
        engineAlive: engine !== undefined && alive(engine),
        state: registry.worker(id)?.state,
      });
      if (reason.startsWith('hand-over')) controller.abort();
    });
    const events: PoolEvent[] = [];
    registry.on((event) => events.push(event));

    const sigtermAt = Date.now();
    child.kill('SIGTERM');
    const exit = await exited;
    await reading;

    expect(exit.code, output).toBe(0);
    expect(lost.map(({ workerId: id, reason }) => [id, reason])).toEqual([
      [workerId, expect.stringMatching(/^hand-over: SIGTERM \(engines stop in \d+ ms\)$/)],
    ]);
    const [handover] = lost;
    // At --drain-grace − --handover-margin after the SIGTERM (the grace starts once the drain
    // notice is answered, so never earlier), and before the grace is over.
    const after = (handover?.at ?? 0) - sigtermAt;
    expect(after).toBeGreaterThanOrEqual((DRAIN_GRACE_S - MARGIN_S) * 1000);
    expect(after).toBeLessThan(DRAIN_GRACE_S * 1000);
    // The engine was running, and the worker draining, when the hand-over was announced.
    expect(handover?.engineAlive).toBe(true);
    expect(handover?.state).toBe('draining');
    // The stream was still going (5 tokens/s) until the hand-over aborted it.
    expect(streamEnded).toBeGreaterThanOrEqual(handover?.at ?? Infinity);
    expect(streamed).not.toContain('[DONE]');
    // Then the engine was stopped, and the worker deregistered.
    expect(engine !== undefined && alive(engine)).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['draining', 'hand-over', 'gone']);
    expect(events[1]).toMatchObject({ type: 'hand-over', workerId, jobId: '4711' });
    expect(registry.worker(workerId)?.state).toBe('gone');
  });
});
