/**
 * A draining worker refuses new requests itself: from `stop` (SIGTERM) on, its engine fronts
 * answer every new `POST /v1/*` with 503 `worker_draining` and `x-es-draining: 1` before any
 * byte, so every data-plane process learns of the drain even when the scheduler cannot be
 * told. A real worker and mock engine, the scheduler down, the official openai client.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { APIError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { expectedGeneration } from '@es/mock-engine';
import { WORKER_DRAINING, deriveEngineKey } from '@es/protocol';
import type { HeartbeatRequest } from '@es/protocol';
import { TEST_SECRET, startFakeScheduler } from '@es/testkit';
import { createWorker } from '../src/index.js';
import { openStream } from './engine-helpers.js';

const ENGINE_KEY = deriveEngineKey(TEST_SECRET, '4321');
const withKey = { authorization: `Bearer ${ENGINE_KEY}` };
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('a draining worker', () => {
  it('refuses new inference requests at its front (503 worker_draining, x-es-draining: 1); in-flight ones finish, probes and /detokenize answer', async () => {
    const scheduler = await startFakeScheduler(150);
    let schedulerUp = true;
    cleanups.push(async () => {
      if (schedulerUp) await scheduler.close();
    });
    const worker = createWorker({
      schedulerUrl: scheduler.url,
      deployment: 'default',
      engine: 'mock',
      model: 'mock-model',
      jobId: '4321',
      basePort: 0,
      gpusPerNode: 1,
      visibleDevices: '',
      secret: TEST_SECRET,
      logDir: mkdtempSync(join(tmpdir(), 'es-drain-front-')),
      probeIntervalMs: 50,
      drainGraceMs: 20_000,
      handoverMarginMs: 1_000,
      requestTimeoutMs: 500,
      engineExtraArgs: '--tokens-per-second 50 --ttft 0',
    });
    cleanups.push(async () => {
      worker.killEnginesSync();
      await worker.stop('test cleanup');
    });
    await worker.start();
    await scheduler.waitFor(
      (call) =>
        call.route === 'heartbeat' && (call.body as unknown as HeartbeatRequest).state === 'ready',
    );
    const url = `http://127.0.0.1:${worker.instances()[0]!.port}`;
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: ENGINE_KEY, maxRetries: 0 });

    // In flight when the drain begins: 60 tokens at 50/s.
    const inFlight = await openStream(url, ENGINE_KEY, 60);
    const chunks = inFlight[Symbol.asyncIterator]();
    const first = await chunks.next();
    expect(first.done).toBe(false);
    let text = first.done === true ? '' : (first.value.choices[0]?.delta.content ?? '');

    // The scheduler is down: the drain notice cannot reach it, the front refuses anyway.
    schedulerUp = false;
    await scheduler.close();
    const stopped = worker.stop('SIGTERM');

    for (const send of [
      () => client.completions.create({ model: 'mock-model', prompt: 'hi', max_tokens: 4 }),
      () =>
        client.chat.completions.create({
          model: 'mock-model',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 4,
          stream: true,
        }),
    ]) {
      const refusal = await send().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refusal).toBeInstanceOf(APIError);
      const error = refusal as APIError;
      expect(error.status).toBe(503);
      expect(error.code).toBe(WORKER_DRAINING.code);
      expect(error.type).toBe('server_error');
      expect(error.headers?.get(WORKER_DRAINING.header)).toBe('1');
    }

    // What the worker and the hand-over use goes on: health, load, detokenize, models.
    expect((await fetch(`${url}/health`, { headers: withKey })).status).toBe(200);
    expect(await (await fetch(`${url}/metrics`, { headers: withKey })).text()).toContain(
      'vllm:num_requests_running{model_name="mock-model"} 1',
    );
    const detokenize = await fetch(`${url}/detokenize`, {
      method: 'POST',
      headers: { ...withKey, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mock-model', tokens: [104, 105] }),
    });
    expect(detokenize.status).toBe(200);
    expect((await fetch(`${url}/v1/models`, { headers: withKey })).status).toBe(200);

    // The stream that was in flight finishes whole.
    let finish: string | null | undefined;
    for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) {
      text += next.value.choices[0]?.delta.content ?? '';
      finish = next.value.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('length');
    const whole = expectedGeneration(
      { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
      { maxTokens: 60 },
    );
    expect(text).toBe(whole.text);
    expect((await stopped).code).toBe(0);
  });
});
