/* global URL */
// What keeping the generated ids costs: @es/proxy with continuation (each chat stream goes
// upstream with `return_token_ids`, every event parsed, the ids kept) against the same proxy
// with continuation off, both in front of the bench upstream and measured back to back.
//
// - CPU, in pairs (one sample of each, the order alternating from pair to pair, so both see
//   the machine as it is at that moment): µs of the proxy process's CPU per streamed chunk in
//   the steady state, per streamed request over its whole life, and per non-streaming
//   request (c=64); each pair gives an on / off ratio, and the median of those is reported.
// - Memory per request in flight: N streams held open after their first M tokens (so the
//   proxy with continuation holds M ids each), in fresh proxy processes (--expose-gc, one pair
//   per round), RSS and heap used after a full GC with the streams held, less the same after
//   the warm-up with none: (with - idle) / N; for two values of M, so the heap a generated
//   token adds (the slope) is told apart from what a request holds whatever its length.
import { createRequire } from 'node:module';
import { createTally, exchange, nonStreaming, streaming, whenReleased } from './load.mjs';
import { childMessage, childStats, proxyNodeArgs, sleep, startChild } from './processes.mjs';
import { createStreamCheck } from './verify.mjs';
import { benchWorkload } from './workloads.mjs';

const require = createRequire(new URL('../../packages/proxy/package.json', import.meta.url));
const { Pool } = require('undici');

/** The goal: continuation costs no more than this much more CPU per streamed chunk. */
export const CHUNK_CPU_GOAL = 1.1;

export const COST_NAMES = ['proxy', 'proxyNoContinuation'];

/** Pairs taken beyond those wanted when some have no steady state. */
const EXTRA_PAIRS = 2;

/** The measurement's sizes (quick: brief). */
export function costSettings(settings) {
  return {
    pairs: settings.quick ? 1 : 3,
    // 10,000 chunks/s as in the streaming phase, from fewer streams at a faster pace (100
    // tokens/s each): opening 1,000 streams can take most of a stream's life on a busy 2-core
    // machine, leaving no steady state; 100 open in a small part of a stream's 2.5 s.
    streams: 100,
    chunks: settings.quick ? 150 : 250,
    intervalMs: 10,
    memoryRounds: settings.quick ? 1 : 2,
    // Both lengths' streams held at once, two sockets each in the proxy.
    heldStreams: Math.min(settings.quick ? 300 : 500, Math.floor((settings.fdLimit - 64) / 4)),
    batches: settings.quick ? 2 : 4,
    /** Tokens generated before a held stream falls silent: a short and a long generation. */
    heldTokens: [20, 200],
  };
}

/**
 * Streams held open after their first tokens: `open(streams, tokens)` opens that many more
 * (250 at a time), each checked until its `tokens` chunks have arrived, and keeps them open;
 * `drop()` closes every one and waits for the proxy's in-flight count to be back to 0.
 */
function createHolder({ url, headers, stats }, workload, maxStreams) {
  const pool = new Pool(url, { connections: maxStreams, pipelining: 1 });
  const { tally, record } = createTally();
  const bodies = [];
  const openOne = async (tokens) => {
    const { body, expected } = workload.held(tokens);
    const check = createStreamCheck(expected);
    const failure = await exchange(pool, headers, body, async (res) => {
      bodies.push(res.body);
      await new Promise((resolve, reject) => {
        const onData = (data) => {
          check.push(data);
          if (check.failure !== undefined || check.chunks === tokens) {
            res.body.off('data', onData);
            resolve();
          }
        };
        res.body.on('data', onData);
        res.body.once('error', reject);
        res.body.once('end', resolve);
      });
      res.body.on('error', () => {});
      res.body.resume();
      if (check.failure === undefined && check.chunks < tokens)
        return { kind: 'unterminated', detail: `ended after ${check.chunks} of ${tokens} chunks` };
      return check.failure;
    });
    record(failure, true);
  };
  return {
    tally,
    async open(streams, tokens) {
      for (let i = 0; i < streams; i += 250) {
        await Promise.all(
          Array.from({ length: Math.min(250, streams - i) }, () => openOne(tokens)),
        );
      }
    },
    async drop() {
      for (const b of bodies.splice(0)) b.destroy();
      await pool.destroy();
      const released = await whenReleased(stats);
      return released.inFlight;
    },
  };
}

/**
 * The upstream closes the connections undici opened for aborted requests and never used
 * (see upstream.mjs) after 2 s: wait for that, so they are not in a baseline.
 */
async function upstreamSettled(upstream) {
  for (let i = 0; i < 50; i++) {
    if ((await childStats(upstream.child)).connections <= 8) return;
    await sleep(100);
  }
}

/**
 * One proxy process's memory per request in flight: after a short warm-up (few streams, so
 * that little freed memory stays resident for the first batch to reuse), a full GC and the
 * baseline; then `batches` batches of `heldStreams / batches` streams held after `short`
 * tokens, then as many after `long` tokens, all held until the end, with a full GC and a
 * reading after each batch. A batch's RSS and heap used per stream is its reading less the
 * one before, divided by its streams; each length's figure is the median over its batches
 * (the first batch may still fit in memory the process had freed).
 */
async function memoryOf(t, upstream, workload, { heldStreams, heldTokens, batches }) {
  const warm = createHolder(t, workload, 50);
  await warm.open(50, Math.max(...heldTokens));
  const warmInFlight = await warm.drop();
  await upstreamSettled(upstream);
  const size = Math.floor(heldStreams / batches);
  const holder = createHolder(t, workload, size * batches * heldTokens.length);
  const readings = [await t.gc()];
  const out = { warmup: warm.tally };
  for (const tokens of heldTokens) {
    const rss = [];
    const heap = [];
    for (let i = 0; i < batches; i++) {
      await holder.open(size, tokens);
      const reading = await t.gc();
      const before = readings.at(-1);
      readings.push(reading);
      rss.push((reading.rss - before.rss) / 1024 / size);
      heap.push((reading.heapUsed - before.heapUsed) / 1024 / size);
    }
    out[tokens] = { rssKBPerStream: median(rss), heapKBPerStream: median(heap), rss, heap };
  }
  out.inFlightAfterClose = Math.max(warmInFlight, await holder.drop());
  out.readings = readings.map(({ rss, heapUsed }) => ({ rss, heapUsed }));
  out.held = holder.tally;
  return out;
}

const target = (server, headers) => ({
  url: server.url,
  headers,
  stats: () => childStats(server.child),
  gc: () => childMessage(server.child, 'gc'),
});

/** Both proxies' argv in front of `upstream`. */
const proxyArgv = (upstream) => ({
  proxy: [upstream],
  proxyNoContinuation: ['--no-continuation', upstream],
});

/** The cost measurement: its own upstream and proxies, stopped at the end. */
export async function costSection(settings, log) {
  const sizes = costSettings(settings);
  const own = [];
  const start = async (file, argv, execArgv) => {
    const server = await startChild(file, argv, execArgv);
    own.push(server.child);
    return server;
  };
  const headers = { 'content-type': 'application/json' };
  const workload = benchWorkload({ chunks: sizes.chunks, intervalMs: sizes.intervalMs });
  const section = {
    sizes,
    sampleMs: settings.sampleMs,
    warmup: {},
    pairs: [],
    memory: [],
  };
  try {
    const upstream = await start('upstream.mjs');
    const argv = proxyArgv(upstream.url);
    const targets = {};
    for (const name of COST_NAMES)
      targets[name] = target(await start('proxy.mjs', argv[name], proxyNodeArgs()), headers);
    for (const name of COST_NAMES) {
      log(`cost, warm-up: ${name}`);
      section.warmup[name] = await streaming(targets[name], workload, {
        streams: sizes.streams,
        chunks: 10,
        intervalMs: sizes.intervalMs,
      });
      await nonStreaming(targets[name], workload, {
        concurrency: 64,
        settleMs: 0,
        durationMs: settings.warmupMs,
      });
    }
    // A pair without a steady state on both sides has no per-chunk figure: up to
    // EXTRA_PAIRS more are taken, until `pairs` have one.
    const steadyPairs = () =>
      section.pairs.filter((p) => COST_NAMES.every((n) => p[n].stream.steady)).length;
    for (let i = 0; steadyPairs() < sizes.pairs && i < sizes.pairs + EXTRA_PAIRS; i++) {
      const pair = {};
      for (const name of i % 2 === 0 ? COST_NAMES : [...COST_NAMES].reverse()) {
        log(`cost, CPU pair ${i + 1} (${sizes.pairs} wanted with a steady state): ${name}`);
        pair[name] = {
          stream: await streaming(targets[name], workload, {
            streams: sizes.streams,
            chunks: sizes.chunks,
            intervalMs: sizes.intervalMs,
          }),
          completion: await nonStreaming(targets[name], workload, {
            concurrency: 64,
            settleMs: settings.settleMs,
            durationMs: settings.sampleMs,
          }),
        };
      }
      section.pairs.push(pair);
    }
    // Fresh processes for memory: a heap grown by the CPU samples would hide what a stream adds.
    for (const child of own.splice(1)) child.kill('SIGINT');
    for (let r = 0; r < sizes.memoryRounds; r++) {
      const round = {};
      for (const name of r % 2 === 0 ? COST_NAMES : [...COST_NAMES].reverse()) {
        log(
          `cost, memory round ${r + 1}/${sizes.memoryRounds}: ${sizes.heldStreams} streams held after ${sizes.heldTokens.join(', then as many after ')} tokens: ${name}`,
        );
        const server = await startChild('proxy.mjs', argv[name], ['--expose-gc']);
        try {
          round[name] = await memoryOf(target(server, headers), upstream, workload, sizes);
        } finally {
          server.child.kill('SIGINT');
        }
      }
      section.memory.push(round);
    }
  } finally {
    for (const child of own) child.kill('SIGINT');
  }
  return section;
}

function median(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The figures of the cost section: per figure, each side's median, the pairs' ratios. */
export function summarizeCost(cost) {
  if (cost === undefined) return undefined;
  // Pairs (rounds) where either side has no figure are left out of both sides.
  const figure = (rounds, fn) => {
    const both = rounds
      .map((r) => [fn(r.proxy), fn(r.proxyNoContinuation)])
      .filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
    const on = both.map(([a]) => a);
    const off = both.map(([, b]) => b);
    return {
      on: median(on),
      off: median(off),
      ratio: median(both.map(([a, b]) => a / b)),
      ratios: both.map(([a, b]) => a / b),
      difference: median(both.map(([a, b]) => a - b)),
      differences: both.map(([a, b]) => a - b),
      perRound: { on, off },
    };
  };
  const steady = (s) => (s.stream.steady ? s.stream.cpuMsPer1000Chunks : NaN);
  const [short, long] = cost.sizes.heldTokens;
  return {
    chunkCpu: figure(cost.pairs, steady),
    streamCpu: figure(cost.pairs, (s) => s.stream.cpuUsPerStream),
    completionCpu: figure(cost.pairs, (s) => s.completion.cpuUsPerRequest),
    rss: figure(cost.memory, (m) => m[long].rssKBPerStream),
    heap: figure(cost.memory, (m) => m[long].heapKBPerStream),
    rssShort: figure(cost.memory, (m) => m[short].rssKBPerStream),
    heapShort: figure(cost.memory, (m) => m[short].heapKBPerStream),
    // Bytes of heap per generated token held: the slope between the two lengths.
    heapPerToken: figure(
      cost.memory,
      (m) => ((m[long].heapKBPerStream - m[short].heapKBPerStream) * 1024) / (long - short),
    ),
    steadyPairs: cost.pairs.filter((p) => COST_NAMES.every((n) => p[n].stream.steady)).length,
    pairsTaken: cost.pairs.length,
    inFlightAfterClose: Math.max(
      ...cost.memory.flatMap((r) => COST_NAMES.map((n) => r[n].inFlightAfterClose)),
    ),
  };
}
