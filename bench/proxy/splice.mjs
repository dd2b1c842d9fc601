/* global fetch, performance, URL */
// The extra time a client waits at a splice: two @es/mock-engine processes
// (splice-engine.mjs: the built library with faults injected on the wire) in the pool of one
// bare @es/proxy (proxy.mjs, continuation on, a short stall timeout), streams of the mock
// workload sent through it while the engines cut one stream in `every` after `cutAfter`
// content chunks, by a reset (a crash) in one scenario and by falling silent (a hang) in the
// other. The client stamps every token chunk as it arrives; at a splice it waits the gap
// between the last chunk before the cut and the first after it, less the normal interval
// between chunks. Every response is checked against the engine's own definition of the
// answer (`expectedGeneration`: a pure function of the prompt), and each scenario is judged
// by splice-judge.mjs against what the engines cut and what the proxy continued.
import { createRequire } from 'node:module';
import { createTally, exchange, percentile } from './load.mjs';
import { childMessage, here, sleep, startChild } from './processes.mjs';
import { judgeSplices } from './splice-judge.mjs';
import { createStreamCheck } from './verify.mjs';

const require = createRequire(new URL('../../packages/proxy/package.json', import.meta.url));
const { Pool } = require('undici');

const MODEL = 'bench-splice';
const nowMs = () => performance.now();
const PROMPTS = Array.from(
  { length: 8 },
  (_, k) => `Tell a long story about fox number ${k} and its den.`,
);

/** The measurement's settings (quick: brief). */
export function spliceSettings(settings) {
  return {
    scenarios: ['reset', 'hang'],
    streams: settings.quick ? 24 : 100,
    spreadMs: settings.quick ? 600 : 1500,
    tokens: 40,
    cutAfter: 10,
    every: 2,
    tokensPerSecond: 20,
    ttftMs: 200,
    stallTimeoutMs: 1500,
    prefillSamples: settings.quick ? 3 : 8,
    // --plant-corrupt: one continuation in 5 gets its first token altered.
    plantWrong: settings.plantCorrupt ? 5 : 0,
  };
}

const chatInput = (k) => ({ kind: 'chat', messages: [{ role: 'user', content: PROMPTS[k] }] });
const chatBody = (k, extra) =>
  JSON.stringify({ model: MODEL, messages: chatInput(k).messages, ...extra });
const JSON_HEADERS = { 'content-type': 'application/json' };

/** The events' `choices[0].text` of a completions stream, joined. */
async function completionText(res) {
  let text = '';
  for (const event of (await res.text()).split('\n\n')) {
    const data = event.slice(6);
    if (data !== '' && data !== '[DONE]') text += JSON.parse(data).choices[0]?.text ?? '';
  }
  return text;
}

const post = (url, body) => fetch(url, { method: 'POST', headers: JSON_HEADERS, body });

/**
 * The reference: an uncut answer straight from an engine, for every prompt, must be what
 * `expectedGeneration` says (else the spliced answers would be judged against the wrong
 * text). Then the continuation as the proxy sends it, straight to the engine: the
 * generation's first `cutAfter` tokens with their ids (`return_token_ids`), then
 * `/v1/completions` with the prompt's and those ids as its prompt, whose text must be the
 * rest of the answer; and, one at a time, its time to the first chunk (the engine's prefill
 * of the continuation: its TTFT, with max_tokens 1).
 */
async function reference(engineUrl, s, generation) {
  const prompts = PROMPTS.map((_, k) => k);
  const continuations = await Promise.all(
    prompts.map(async (k) => {
      const res = await post(
        `${engineUrl}/v1/chat/completions`,
        chatBody(k, { max_tokens: s.tokens, stream: true }),
      );
      const g = generation(k);
      const check = createStreamCheck({ deltas: g.deltas, finishReason: g.finishReason });
      check.push(await res.text());
      const failed = check.end();
      if (failed !== undefined)
        throw new Error(
          `the mock engine does not answer what expectedGeneration says (is its dist current? pnpm build): ${failed.detail}`,
        );
      const head = await (
        await post(
          `${engineUrl}/v1/chat/completions`,
          chatBody(k, { max_tokens: s.cutAfter, return_token_ids: true }),
        )
      ).json();
      const prompt = [...head.prompt_token_ids, ...head.choices[0].token_ids];
      const body = (maxTokens) =>
        JSON.stringify({ model: MODEL, prompt, max_tokens: maxTokens, stream: true });
      const text = await completionText(
        await post(`${engineUrl}/v1/completions`, body(s.tokens - s.cutAfter)),
      );
      const rest = g.deltas.slice(s.cutAfter).join('');
      if (text !== rest)
        throw new Error(
          `the mock engine's continuation of prompt ${k} is ${JSON.stringify(text)}, not the rest of its answer ${JSON.stringify(rest)}`,
        );
      return body(1);
    }),
  );
  const prefillMs = [];
  for (let i = 0; i < s.prefillSamples; i++) {
    const sent = nowMs();
    const res = await post(`${engineUrl}/v1/completions`, continuations[i % PROMPTS.length]);
    for await (const _ of res.body) {
      prefillMs.push(nowMs() - sent);
      break;
    }
    await res.body.cancel().catch(() => {});
  }
  return { prefillMs, prefillP50Ms: percentile(prefillMs, 50) };
}

/**
 * `s.streams` streams through the proxy, started over `s.spreadMs`, each with its own
 * x-request-id; for each, the check's verdict and the arrival time of every token chunk.
 */
async function streamsThrough(proxyUrl, scenario, s, generation) {
  const pool = new Pool(proxyUrl, { connections: s.streams, pipelining: 1 });
  const { tally, record } = createTally();
  const one = async (i) => {
    await sleep((i * s.spreadMs) / s.streams);
    const k = i % PROMPTS.length;
    const g = generation(k);
    const requestId = `splice-${scenario}-${i}`;
    const times = [];
    let received = 0;
    const check = createStreamCheck({ deltas: g.deltas, finishReason: g.finishReason }, () =>
      times.push(received),
    );
    const failure = await exchange(
      pool,
      { ...JSON_HEADERS, 'x-request-id': requestId },
      chatBody(k, { max_tokens: s.tokens, stream: true }),
      async (res) => {
        for await (const data of res.body) {
          received = nowMs();
          check.push(data);
        }
        return check.end();
      },
    );
    record(failure, true);
    const gaps = times.slice(1).map((t, j) => t - times[j]);
    return { requestId, failure, gaps };
  };
  const streams = await Promise.all(Array.from({ length: s.streams }, (_, i) => one(i)));
  await pool.close();
  return { streams, tally };
}

/** The splice measurement: its own engines and proxies, stopped at the end. */
export async function spliceSection(settings, log) {
  const s = spliceSettings(settings);
  const { expectedGeneration } = await import(here('../../packages/mock-engine/dist/index.mjs'));
  const cache = new Map();
  const generation = (k) => {
    if (!cache.has(k)) cache.set(k, expectedGeneration(chatInput(k), { maxTokens: s.tokens }));
    return cache.get(k);
  };
  const own = [];
  const start = async (file, argv) => {
    const server = await startChild(file, argv);
    own.push(server.child);
    return server;
  };
  const engineOptions = {
    model: MODEL,
    tokensPerSecond: s.tokensPerSecond,
    ttft: s.ttftMs,
    maxTokensDefault: s.tokens,
  };
  const section = { settings: s, engineOptions, scenarios: {} };
  try {
    const engines = [];
    for (let i = 0; i < 2; i++)
      engines.push(await start('splice-engine.mjs', [JSON.stringify(engineOptions)]));
    log('splice: reference answers and the continuation re-prefill, straight to an engine');
    section.reference = await reference(engines[1].url, s, generation);
    for (const mode of s.scenarios) {
      log(
        `splice, ${mode}: ${s.streams} streams, one in ${s.every} cut after ${s.cutAfter} chunks`,
      );
      const argv = [
        '--stall-timeout-ms',
        String(s.stallTimeoutMs),
        engines.map((e) => e.url).join(','),
        MODEL,
      ];
      // A fresh proxy per scenario: its retry budget (which a continuation takes from) is
      // the default's, not what the previous scenario left of it.
      const proxy = await start('proxy.mjs', argv);
      section.proxyArgv = [
        'bench/proxy/proxy.mjs',
        ...argv.map((a) => a.replace(/http:\/\/127\.0\.0\.1:\d+/g, '<engine>')),
      ];
      const fault = { mode, after: s.cutAfter, every: s.every, plantWrong: s.plantWrong };
      for (const e of engines) await childMessage(e.child, { command: 'fault', fault });
      const began = nowMs();
      const { streams, tally } = await streamsThrough(proxy.url, mode, s, generation);
      const seconds = (nowMs() - began) / 1000;
      for (const e of engines) await childMessage(e.child, { command: 'fault', fault: undefined });
      const cuts = [];
      const planted = [];
      for (const e of engines) {
        const drained = await childMessage(e.child, { command: 'drain' });
        cuts.push(...drained.cut);
        planted.push(...drained.planted);
      }
      const { continuations } = await childMessage(proxy.child, { command: 'continuations' });
      proxy.child.kill('SIGINT');
      const cutIds = new Set(cuts.map((c) => c.requestId));
      // The normal interval: every gap of the streams no engine cut.
      const normal = streams
        .filter((x) => !cutIds.has(x.requestId) && x.failure === undefined)
        .flatMap((x) => x.gaps);
      const normalIntervalMs = percentile(normal, 50);
      const verdict = judgeSplices({
        mode,
        streams: streams.map((x) => ({
          requestId: x.requestId,
          failure: x.failure,
          gapMs: x.gaps[s.cutAfter - 1],
        })),
        cuts,
        continuations,
        planted,
        cutAfter: s.cutAfter,
        normalIntervalMs,
      });
      section.scenarios[mode] = {
        seconds,
        normalIntervalMs,
        normalIntervalP95Ms: percentile(normal, 95),
        cuts: cuts.length,
        planted: planted.length,
        continuations: continuations.map(
          ({ requestId, outcome, reason, cause, waitMs, generatedTokens }) => ({
            requestId,
            outcome,
            reason,
            cause,
            waitMs,
            generatedTokens,
          }),
        ),
        ...verdict,
        tally,
      };
    }
  } finally {
    for (const child of own) child.kill('SIGINT');
  }
  return section;
}

/** p50 and p95 of each scenario's extra waits, and the goals. */
export function summarizeSplice(splice) {
  if (splice === undefined) return undefined;
  const s = splice.settings;
  const prefill = splice.reference.prefillP50Ms;
  const out = {
    prefillMs: prefill,
    stallTimeoutMs: s.stallTimeoutMs,
    intervalMs: 1000 / s.tokensPerSecond,
    scenarios: {},
  };
  for (const [mode, sc] of Object.entries(splice.scenarios)) {
    const goalMs = prefill + 1000 + (mode === 'hang' ? s.stallTimeoutMs : 0);
    const p95 = percentile(sc.excessMs, 95);
    out.scenarios[mode] = {
      splices: sc.splices,
      cuts: sc.cuts,
      correct: sc.correctSpliced,
      p50: percentile(sc.excessMs, 50),
      p95,
      proxyWaitP50: percentile(sc.proxyWaitMs, 50),
      proxyWaitP95: percentile(sc.proxyWaitMs, 95),
      normalIntervalMs: sc.normalIntervalMs,
      goalMs,
      met: Number.isFinite(p95) && p95 <= goalMs,
      // Chunks bunched up or spread out: the machine, not the proxy, set the pace.
      stalled: !(Math.abs(sc.normalIntervalMs - out.intervalMs) <= out.intervalMs / 2),
      problems: sc.problems,
    };
  }
  return out;
}
