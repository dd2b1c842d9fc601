/**
 * `--cors-origin` (`cors_origin` in a config file) on the built scheduler with the local
 * backend (real apps/worker processes, mock engines): a browser page on an allowed origin can
 * call `/v1` (preflight, streamed chat), other origins get no CORS header, and CORS is off
 * without the flag. The seed allowed every origin; here it is opt-in.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FAST_FLAGS,
  killStartedSchedulers,
  runSchedulerToExit,
  startSchedulerProcess,
  waitFor,
} from './harness.js';

const LOCAL = ['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'];
const NOTEBOOK = 'http://localhost:8888';
const KEY = 'sk-cors-e2e';

afterAll(async () => {
  await killStartedSchedulers();
});

/** A request as a browser page would send it (fetch sends the given `Origin` as it is). */
async function send(url: string, method: string, headers: Record<string, string>, body?: string) {
  const res = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

const streamedChat = JSON.stringify({
  model: 'mock-model',
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 4,
  stream: true,
});
const from = (origin: string) => ({
  origin,
  authorization: `Bearer ${KEY}`,
  'content-type': 'application/json',
});

async function scheduler(args: string[], id: string) {
  const dir = mkdtempSync(join(tmpdir(), `es-cors-${id}-`));
  const s = await startSchedulerProcess({
    args: [...LOCAL, '--max-nodes', '1', ...FAST_FLAGS, '--scheduler-id', id, ...args],
    logDir: join(dir, 'logs'),
  });
  await waitFor(
    'a ready worker',
    () => s.readyWorkerIds(),
    (ids) => ids.length > 0,
    30_000,
  );
  return s;
}

describe('--cors-origin', () => {
  it('lets a page on the allowed origin call /v1 (preflight, stream) and nobody else', async () => {
    const s = await scheduler(
      ['--api-key', KEY, '--cors-origin', NOTEBOOK, '--cors-origin', 'https://lab.example.org'],
      'cors-list',
    );
    const preflight = await send(`${s.url}/v1/chat/completions`, 'OPTIONS', {
      origin: NOTEBOOK,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type',
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(NOTEBOOK);
    expect(preflight.headers.get('access-control-allow-headers')).toMatch(
      /authorization, content-type/,
    );
    const stream = await send(`${s.url}/v1/chat/completions`, 'POST', from(NOTEBOOK), streamedChat);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/text\/event-stream/);
    expect(stream.headers.get('access-control-allow-origin')).toBe(NOTEBOOK);
    expect(stream.body).toContain('data: [DONE]');
    const other = await send(
      `${s.url}/v1/chat/completions`,
      'POST',
      from('https://evil.example'),
      streamedChat,
    );
    expect(other.status).toBe(200);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    await s.stop();
  });

  it("cors_origin '*' in a config file: every origin", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-cors-file-'));
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ cors_origin: '*' }));
    const s = await scheduler(['--config', config], 'cors-any');
    const res = await send(
      `${s.url}/v1/chat/completions`,
      'POST',
      from('https://any.example'),
      streamedChat,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    await s.stop();
  });

  it('is off without the flag', async () => {
    const s = await scheduler([], 'cors-off');
    const res = await send(`${s.url}/v1/chat/completions`, 'POST', from(NOTEBOOK), streamedChat);
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    await s.stop();
  });

  it('refuses an origin with a path, naming the flag and the fix', async () => {
    const exit = await runSchedulerToExit([...LOCAL, '--cors-origin', 'http://localhost:8888/lab']);
    expect(exit.code).not.toBe(0);
    expect(exit.stdout + exit.stderr).toMatch(
      /--cors-origin.*"http:\/\/localhost:8888\/lab" is not an origin: pass scheme:\/\/host\[:port\] without a path/,
    );
  });
});
