/* global process, URL */
// The load generator: undici pools on 127.0.0.1, every response checked (verify.mjs). Only
// responses that pass count as served; the others are tallied by kind of failure.
import { createRequire } from 'node:module';
import { checkCompletion, createStreamCheck, FAILURE_KINDS } from './verify.mjs';
import { sleep } from './processes.mjs';

const require = createRequire(new URL('../../packages/proxy/package.json', import.meta.url));
const { Pool } = require('undici');

const PATH = '/v1/chat/completions';
/** A streaming sample whose steady state is shorter than this part of a stream has no figures. */
const MIN_WINDOW_PART = 1 / 3;
const nowNs = () => Number(process.hrtime.bigint());

/** The target's stats once nothing is in flight through it, or after 5 s (the last ones). */
export async function whenReleased(stats) {
  let released;
  for (let i = 0; i < 50; i++) {
    released = await stats();
    if (released.inFlight === 0) break;
    await sleep(100);
  }
  return released;
}

export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Failures by kind. `measured` counts those inside the measurement window (beside `ok`);
 * `all` counts every response checked, warm-up included (the planted-defect check needs all).
 */
export function createTally() {
  const tally = {
    ok: 0,
    failed: Object.fromEntries(FAILURE_KINDS.map((kind) => [kind, 0])),
    checked: 0,
    failedAll: 0,
    examples: [],
  };
  return {
    tally,
    record(failure, inWindow) {
      tally.checked++;
      if (failure === undefined) {
        if (inWindow) tally.ok++;
        return;
      }
      tally.failedAll++;
      if (inWindow) tally.failed[failure.kind]++;
      if (tally.examples.length < 3) tally.examples.push(`${failure.kind}: ${failure.detail}`);
    },
  };
}

const transportFailure = (error) => ({
  kind: 'transport',
  detail: `${error.code ?? ''} ${error.message}`,
});

/**
 * POST `body` and return the response's failure, if any: a non-2xx status, a transport error,
 * or what `read` (given a 2xx response) finds wrong with it.
 */
export async function exchange(pool, headers, body, read) {
  try {
    const res = await pool.request({ path: PATH, method: 'POST', headers, body });
    if (res.statusCode >= 200 && res.statusCode < 300) return await read(res);
    return {
      kind: 'status',
      detail: `HTTP ${res.statusCode}: ${(await res.body.text()).slice(0, 120)}`,
    };
  } catch (error) {
    return transportFailure(error);
  }
}

const cpuOf = (s) => s.cpu.user + s.cpu.system;

/**
 * CPU (µs) of each process of a multi-process target (`parts` of its stats: each worker, the
 * primary or master, the scheduler) between two stats, divided by `n`.
 */
function partsPer(before, after, n) {
  if (before?.parts === undefined || after?.parts === undefined) return undefined;
  return Object.fromEntries(
    Object.keys(after.parts).map((k) => [k, (after.parts[k] - (before.parts[k] ?? NaN)) / n]),
  );
}

/**
 * Non-streaming completions at `concurrency` for `settleMs` (not measured) then `durationMs`:
 * served req/s and latency percentiles (ms) of the verified responses completed in the window,
 * and the target process's CPU per response (µs; the figure the machine's other load
 * disturbs least), when `stats` gives it.
 */
export async function nonStreaming(
  { url, headers, stats },
  workload,
  { concurrency, settleMs, durationMs },
) {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1 });
  const { tally, record } = createTally();
  const latencies = [];
  let measuring = false;
  let windowCount = 0;
  let done = false;
  const loop = async () => {
    while (!done) {
      const { body, expected } = workload.completion();
      const t = nowNs();
      const failure = await exchange(pool, headers, body, async (res) =>
        checkCompletion(await res.body.text(), expected),
      );
      const inWindow = measuring;
      if (inWindow) windowCount++;
      record(failure, inWindow);
      if (inWindow && failure === undefined) latencies.push((nowNs() - t) / 1e6);
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  await sleep(settleMs);
  const before = await stats?.();
  measuring = true;
  const start = nowNs();
  await sleep(durationMs);
  measuring = false;
  const elapsed = (nowNs() - start) / 1e9;
  const after = await stats?.();
  done = true;
  await Promise.all(loops);
  await pool.close();
  const result = {
    rps: tally.ok / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    ...tally,
  };
  if (before !== undefined) {
    result.cpuUsPerRequest = (cpuOf(after) - cpuOf(before)) / windowCount;
    const parts = partsPer(before, after, windowCount);
    if (parts !== undefined) result.partsCpuUsPerRequest = parts;
  }
  return result;
}

/**
 * `streams` concurrent streams of `chunks` chunks, `intervalMs` apart. Measured in the steady
 * state only, from one interval after the last stream opened to the first stream's end, so
 * connection set-up and teardown are not counted as per-chunk cost (a window shorter than
 * MIN_WINDOW_PART of a stream gives no figures, `steady: false`): chunks received, the
 * target process's CPU per 1,000 chunks and RSS (`stats` gives the process's CPU and RSS),
 * and, when the engine stamps its chunks, per-chunk latency (µs). Besides, the target's CPU
 * per stream over the whole sample (`cpuUsPerStream`: set-up and teardown included).
 */
export async function streaming(
  { url, headers, stats },
  workload,
  { streams, chunks, intervalMs },
) {
  const pool = new Pool(url, { connections: streams, pipelining: 1 });
  const { tally, record } = createTally();
  const latencies = [];
  let windowChunks = 0;
  let open = 0;
  let phase = 'ramp';
  let windowStart;
  let windowEnd;
  let windowStartNs;
  let windowEndNs;
  const before = await stats?.();
  const beginWindow = async () => {
    await sleep(intervalMs);
    if (phase !== 'ramp') return;
    windowStart = await stats?.();
    windowStartNs = nowNs();
    phase = 'window';
  };
  const endWindow = async () => {
    if (phase !== 'window') return;
    phase = 'done';
    windowEndNs = nowNs();
    windowEnd = await stats?.();
  };
  const one = async (i) => {
    // Spread stream starts over one interval so chunks are not sent in lockstep.
    await sleep((i * intervalMs) / streams);
    const { body, expected } = workload.stream(chunks);
    let received = 0;
    // Every token's chunk counts, those of "" text too (the engine sends and the proxy
    // relays them all the same).
    const check = createStreamCheck(expected, (chunk) => {
      if (phase !== 'window') return;
      windowChunks++;
      if (chunk.t !== undefined) latencies.push((received - Number(chunk.t)) / 1e3);
    });
    const failure = await exchange(pool, headers, body, async (res) => {
      if (++open === streams) void beginWindow();
      for await (const data of res.body) {
        received = nowNs();
        check.push(data);
      }
      if (phase === 'window') void endWindow();
      return check.end();
    });
    // Every stream lives through the window: all of them count.
    record(failure, true);
  };
  await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
  await pool.close();
  const after = await stats?.();
  const windowMs = (windowEndNs - windowStartNs) / 1e6;
  const result = { chunks: windowChunks, windowMs, ...tally };
  // CPU per stream over its whole life (opened, every chunk relayed, closed), all counted.
  if (before !== undefined) result.cpuUsPerStream = (cpuOf(after) - cpuOf(before)) / streams;
  // RSS before the sample and with every stream open (bytes), for the caller to compare
  // with the process's RSS before its first sample: later samples start from a grown heap.
  if (before !== undefined) result.rssBefore = before.rss;
  if (windowStart !== undefined && windowEnd !== undefined) {
    result.rssOpen = Math.max(windowStart.rss, windowEnd.rss);
  }
  // Opening the streams may take about as long as a stream lasts on a busy machine: then
  // there is no steady state with all of them open, and no figure to report.
  result.steady = windowMs >= MIN_WINDOW_PART * chunks * intervalMs;
  if (!result.steady) return result;
  result.p50us = percentile(latencies, 50);
  result.p99us = percentile(latencies, 99);
  if (before !== undefined) {
    result.cpuMsPer1000Chunks = (cpuOf(windowEnd) - cpuOf(windowStart)) / windowChunks;
    // µs per chunk, the same number as ms per 1,000 chunks.
    const parts = partsPer(windowStart, windowEnd, windowChunks);
    if (parts !== undefined) result.partsCpuUsPerChunk = parts;
  }
  return result;
}

/**
 * `streams` idle streams (first chunk received and checked, then silence) opened in batches of
 * 500 and held `holdMs`, then dropped; the target's in-flight count must then return to 0.
 */
export async function idle({ url, headers, stats }, workload, { streams, holdMs }) {
  const pool = new Pool(url, { connections: streams, pipelining: 1 });
  const { tally, record } = createTally();
  const before = await stats();
  let endedEarly = 0;
  let holding = true;
  const bodies = [];
  const openOne = async () => {
    const { body, expected } = workload.idle();
    const check = createStreamCheck(expected);
    const failure = await exchange(pool, headers, body, async (res) => {
      await new Promise((resolve, reject) => {
        const onData = (data) => {
          check.push(data);
          if (check.failure !== undefined || check.chunks > 0) {
            res.body.off('data', onData);
            resolve();
          }
        };
        res.body.on('data', onData);
        res.body.once('error', reject);
      });
      res.body.on('end', () => holding && endedEarly++);
      res.body.on('error', () => holding && endedEarly++);
      res.body.resume();
      bodies.push(res.body);
      return check.failure;
    });
    record(failure, true);
  };
  const t = nowNs();
  for (let i = 0; i < streams; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, streams - i) }, openOne));
  }
  const openSeconds = (nowNs() - t) / 1e9;
  await sleep(holdMs);
  const held = await stats();
  holding = false;
  for (const b of bodies) b.destroy();
  await pool.destroy();
  // Every stream the clients dropped must be cancelled upstream and released.
  const released = await whenReleased(stats);
  return {
    streams,
    held: tally.ok - endedEarly,
    endedEarly,
    openSeconds,
    rssMBPer1000Streams: ((held.rss - before.rss) / 2 ** 20) * (1000 / streams),
    inFlightAfterClose: released.inFlight,
    ...tally,
  };
}
