/**
 * A stream cut by its engine, end to end through real sockets: mock engines started with
 * `--die-mid-stream 2` behind the scheduler's proxy (its own wiring, in-process), the
 * official `openai` client. The stream ends with an error event; `/metrics`, the status
 * (per-worker figures) and `es workers` count it as an error, never as a 200. Moved here
 * from packages/admin (issue 12).
 */
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminStatus,
  esCli,
  metric,
  readyWorkers,
  scrape,
  startAdminTestScheduler,
  streamChat,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';

let s: AdminTestScheduler;

beforeAll(async () => {
  s = await startAdminTestScheduler({
    maxNodes: 1,
    nodes: 1,
    engineExtraArgs: '--die-mid-stream 2',
  });
  // 1 local node × (4 GPUs / TP 2) = 2 engine instances.
  await until(readyWorkers(s, 2), 30_000, '2 ready workers');
}, 60_000);

afterAll(async () => {
  await s?.close();
});

const chat = { deployment: 'mock', route: '/v1/chat/completions' };

describe('a stream cut mid-way by its engine', () => {
  it('ends with an error for the client and counts as stream_error and as its worker error', async () => {
    const before = await scrape(s);
    const { text, error } = await streamChat(s, 'tell me a long story');
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).code).toBe('upstream_stream_interrupted');
    expect(text).not.toBe('');

    const after = await until(
      async () => {
        const scraped = await scrape(s);
        return metric(scraped, 'es_requests_total', { ...chat, status: 'stream_error' }) === 1
          ? scraped
          : undefined;
      },
      30_000,
      'status="stream_error" in /metrics',
    );
    const delta = (name: string, labels: Record<string, string>) =>
      metric(after, name, labels) - metric(before, name, labels);
    expect(delta('es_requests_total', { ...chat, status: '200' })).toBe(0);
    expect(delta('es_time_to_first_byte_seconds_count', chat)).toBe(1);
    expect(delta('es_request_duration_seconds_count', chat)).toBe(0);

    const workers = (await adminStatus(s)).deployments[0]?.workers ?? [];
    const cut = workers.filter((w) => w.requestErrors > 0);
    expect(cut.map((w) => [w.requestErrors, w.requestsServed])).toEqual([[1, 0]]);
    const listed = await esCli(s, 'workers');
    expect(listed.stdout).toMatch(/\bSERVED\s+ERRORS\b/);
    expect(listed.stdout).toMatch(
      new RegExp(`^${cut[0]?.id.replace(/\./g, '\\.')}\\s.*\\s0\\s+1$`, 'm'),
    );

    // Non-streaming answers are whole (the engine cuts streams only): a 200, served.
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const answer = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4,
    });
    expect(answer.choices[0]?.message.content).toBeTruthy();
    const served = await until(
      async () => {
        const scraped = await scrape(s);
        return metric(scraped, 'es_requests_total', { ...chat, status: '200' }) -
          metric(before, 'es_requests_total', { ...chat, status: '200' }) ===
          1
          ? scraped
          : undefined;
      },
      30_000,
      'the 200 counted',
    );
    expect(metric(served, 'es_requests_total', { ...chat, status: 'stream_error' })).toBe(1);
    const now = (await adminStatus(s)).deployments[0]?.workers ?? [];
    expect(now.reduce((sum, w) => sum + w.requestsServed, 0)).toBe(1);
    expect(now.reduce((sum, w) => sum + w.requestErrors, 0)).toBe(1);
  });
});
