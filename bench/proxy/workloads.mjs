/* global fetch */
// What the load generator sends to an engine and what it must get back. A workload makes
// each request's body and its expectation (see verify.mjs): `completion()`, `stream(chunks?)`,
// `idle()` (bench upstream only).
import { randomBytes } from 'node:crypto';
import { benchExpectation } from './verify.mjs';

/**
 * The bench upstream (upstream.mjs) echoes a nonce per request into its answer, so an answer
 * meant for another request is caught as well as an altered one.
 */
export function benchWorkload({ chunks, intervalMs }) {
  const run = randomBytes(3).toString('hex');
  let n = 0;
  const request = (extra) => {
    const nonce = `${run}-${(n++).toString(36)}`;
    const body = `{"model":"bench","messages":[{"role":"user","content":"Write one sentence about foxes."}],"bench_nonce":"${nonce}"${extra}}`;
    return { nonce, body };
  };
  return {
    model: 'bench',
    stamped: true,
    completion() {
      const { nonce, body } = request(',"max_tokens":16');
      return { body, expected: benchExpectation.completion(nonce) };
    },
    stream(n = chunks) {
      const { nonce, body } = request(
        `,"stream":true,"max_tokens":${n},"bench_interval_ms":${intervalMs}`,
      );
      return { body, expected: benchExpectation.stream(nonce, n) };
    },
    idle() {
      const { nonce, body } = request(',"stream":true,"bench_idle":true');
      return { body, expected: benchExpectation.stream(nonce, 1) };
    },
  };
}

/** Prompts of the mock-engine workload: its output is a deterministic function of the prompt. */
const MOCK_PROMPTS = Array.from(
  { length: 8 },
  (_, k) => `Write one sentence about fox number ${k}.`,
);
const mockBody = (model, k, extra) =>
  JSON.stringify({ model, messages: [{ role: 'user', content: MOCK_PROMPTS[k] }], ...extra });

async function reference(url, headers, body, stream) {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`reference request to ${url} answered ${res.status}: ${text}`);
  if (!stream) return JSON.parse(text).choices[0].message.content;
  if (!text.endsWith('data: [DONE]\n\n'))
    throw new Error(`reference stream from ${url} unterminated`);
  const deltas = [];
  for (const event of text.split('\n\n')) {
    if (!event.startsWith('data: {')) continue;
    const content = JSON.parse(event.slice(6)).choices?.[0]?.delta?.content;
    if (content) deltas.push(content);
  }
  return deltas;
}

/**
 * @es/mock-engine: the expected answers are read once, straight from the engine (`url`,
 * `headers` with its API key), for each of a few prompts; requests cycle through them.
 * `fastModel` answers completions, `streamModel` streams `chunks` tokens.
 */
export async function mockWorkload({ url, streamUrl, headers, fastModel, streamModel, chunks }) {
  const completions = await Promise.all(
    MOCK_PROMPTS.map((_, k) =>
      reference(url, headers, mockBody(fastModel, k, { max_tokens: 16 }), false),
    ),
  );
  const streams = await Promise.all(
    MOCK_PROMPTS.map((_, k) =>
      reference(
        streamUrl,
        headers,
        mockBody(streamModel, k, { max_tokens: chunks, stream: true }),
        true,
      ),
    ),
  );
  let n = 0;
  return {
    stamped: false,
    completion() {
      const k = n++ % MOCK_PROMPTS.length;
      return {
        body: mockBody(fastModel, k, { max_tokens: 16 }),
        expected: { content: completions[k] },
      };
    },
    // Fewer tokens are a prefix of the reference: the mock engine's output continues token
    // for token (a wrong guess would show as failures).
    stream(count = chunks) {
      const k = n++ % MOCK_PROMPTS.length;
      return {
        body: mockBody(streamModel, k, { max_tokens: count, stream: true }),
        expected: { deltas: streams[k].slice(0, count) },
      };
    },
  };
}
