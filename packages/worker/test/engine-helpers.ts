/** Helpers for tests of a worker's engines: their process groups, a stream, a fake `vllm`. */
import { chmodSync, copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

/** Whether a process group still has members (signal 0 probes without killing). */
export function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Start a chat stream of `maxTokens` tokens on the engine at `engineUrl` (key: the engine's). */
export function openStream(engineUrl: string, apiKey: string, maxTokens: number) {
  const client = new OpenAI({ baseURL: `${engineUrl}/v1`, apiKey, maxRetries: 0 });
  return client.chat.completions.create({
    model: 'mock-model',
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: maxTokens,
    stream: true,
  });
}

/**
 * A fake `vllm` (fixtures/fake-vllm.mjs) in a new directory `bin`, and the environment that
 * puts it first on PATH and has it record its argv there. Its /metrics always shows
 * requests in flight.
 */
export function fakeVllmOnPath(): { bin: string; env: NodeJS.ProcessEnv } {
  const bin = mkdtempSync(join(tmpdir(), 'es-fake-vllm-'));
  const fixture = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fake-vllm.mjs');
  copyFileSync(fixture, join(bin, 'vllm'));
  chmodSync(join(bin, 'vllm'), 0o755);
  return {
    bin,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, FAKE_VLLM_RECORD: bin },
  };
}
