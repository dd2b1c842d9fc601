/* global fetch */
// What the load generator sends to an engine and what it must get back. A workload makes
// each request's body and its expectation (see verify.mjs): `completion()`, `stream(chunks?)`,
// `idle()` and `held(tokens)` (bench upstream only).
import { randomBytes } from 'node:crypto';
import { benchExpectation, checkCompletion, createStreamCheck } from './verify.mjs';
import { here } from './processes.mjs';

/** Tokens of a non-streaming answer. */
const COMPLETION_TOKENS = 16;

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
      const { nonce, body } = request(`,"max_tokens":${COMPLETION_TOKENS}`);
      return { body, expected: benchExpectation.completion(nonce, COMPLETION_TOKENS) };
    },
    stream(n = chunks) {
      const { nonce, body } = request(
        `,"stream":true,"max_tokens":${n},"bench_interval_ms":${intervalMs}`,
      );
      return { body, expected: benchExpectation.stream(nonce, n) };
    },
    idle() {
      const { nonce, body } = request(',"stream":true,"bench_idle":true');
      return { body, expected: benchExpectation.idle(nonce) };
    },
    /** A stream held open after its first `tokens` tokens (of `tokens` + 1). */
    held(tokens) {
      const { nonce, body } = request(
        `,"stream":true,"bench_idle":true,"bench_idle_tokens":${tokens},"max_tokens":${tokens + 1}`,
      );
      return { body, expected: benchExpectation.held(nonce, tokens) };
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

/**
 * One request straight to the engine, checked against what `expectedGeneration` says it
 * answers: a disagreement would show as failures of every target, so it stops the run here.
 */
async function crossCheck(url, headers, { body, expected }, stream) {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`reference request to ${url} answered ${res.status}: ${text}`);
  let failed;
  if (stream) {
    const check = createStreamCheck(expected);
    check.push(text);
    failed = check.end();
  } else failed = checkCompletion(text, expected);
  if (failed !== undefined) {
    throw new Error(
      `the mock engine at ${url} does not answer what @es/mock-engine's expectedGeneration says (is its dist current? pnpm build): ${failed.detail}`,
    );
  }
}

/**
 * @es/mock-engine: what each request must receive is the engine's own definition,
 * `expectedGeneration` of the built `@es/mock-engine` (its output is a pure function of the
 * prompt and limits), for a few prompts in turn; one request per prompt straight to the
 * engines (`url` with `headers`, `streamUrl` with `streamHeaders`: each carries its engine's
 * key) confirms they answer just that.
 * `fastModel` answers completions, `streamModel` streams `chunks` tokens.
 */
export async function mockWorkload({
  url,
  streamUrl,
  headers,
  streamHeaders,
  fastModel,
  streamModel,
  chunks,
}) {
  const { expectedGeneration } = await import(here('../../packages/mock-engine/dist/index.mjs'));
  const cache = new Map();
  // The engine's answer to prompt k with at most `maxTokens` tokens (memoized: a pure function).
  const generation = (k, maxTokens) => {
    const key = `${k}/${maxTokens}`;
    let g = cache.get(key);
    if (g === undefined) {
      const input = { kind: 'chat', messages: [{ role: 'user', content: MOCK_PROMPTS[k] }] };
      g = expectedGeneration(input, { maxTokens });
      cache.set(key, g);
    }
    return g;
  };
  const completion = (k) => {
    const g = generation(k, COMPLETION_TOKENS);
    return {
      body: mockBody(fastModel, k, { max_tokens: COMPLETION_TOKENS }),
      expected: {
        content: g.text,
        finishReason: g.finishReason,
        completionTokens: g.completionTokens,
      },
    };
  };
  const stream = (k, count) => {
    const g = generation(k, count);
    return {
      body: mockBody(streamModel, k, { max_tokens: count, stream: true }),
      expected: { deltas: g.deltas, finishReason: g.finishReason },
    };
  };
  await Promise.all(
    MOCK_PROMPTS.flatMap((_, k) => [
      crossCheck(url, headers, completion(k), false),
      crossCheck(streamUrl, streamHeaders, stream(k, chunks), true),
    ]),
  );
  let n = 0;
  return {
    stamped: false,
    completion: () => completion(n++ % MOCK_PROMPTS.length),
    stream: (count = chunks) => stream(n++ % MOCK_PROMPTS.length, count),
  };
}
