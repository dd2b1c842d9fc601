/**
 * An engine on 127.0.0.1 for a test, generating as fast as it can, with an `openai` client;
 * closed after each test.
 */
import OpenAI from 'openai';
import { afterEach } from 'vitest';
import { createMockEngine } from '../src/index.js';
import type { MockEngine, MockEngineOptions } from '../src/index.js';

/** The engines started, closed after each test (push one made otherwise to have it closed). */
export const engines: MockEngine[] = [];

afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

/** Start an engine (no pacing: `tokensPerSecond` and `ttft` 0 unless given). */
export async function start(options: MockEngineOptions = {}) {
  const engine = createMockEngine({ tokensPerSecond: 0, ttft: 0, ...options });
  engines.push(engine);
  const url = await engine.listen(0, '127.0.0.1');
  const client = new OpenAI({
    baseURL: `${url}/v1`,
    apiKey: options.apiKey ?? 'EMPTY',
    maxRetries: 0,
  });
  return { engine, url, client };
}
