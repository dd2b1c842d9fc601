/* global process, console, setTimeout, URL */
// Proxy benchmark: the upstream engine, @es/proxy and a raw node:http pipe proxy (the
// baseline), each in its own process, driven from this one over 127.0.0.1.
//
//   pnpm --filter @es/proxy build && node bench/proxy/run.mjs [--quick] [--idle N] [--streams N]
//
// Figures: non-streaming req/s and added p50/p99 latency at concurrency 1 and 64; streaming
// with N concurrent streams at a fixed token rate: added per-chunk latency p50/p99, proxy CPU
// ms per 1,000 chunks, proxy RSS per 1,000 open streams; and N idle streams held open.
import { execFileSync, fork, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const require = createRequire(here('../../packages/proxy/package.json'));
const { Pool } = require('undici');

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    idle: { type: 'string', default: '10000' },
    streams: { type: 'string', default: '1000' },
    'interval-ms': { type: 'string', default: '100' },
    json: { type: 'boolean', default: false },
    only: { type: 'string', default: 'all' },
    rounds: { type: 'string', default: '3' },
  },
});
const quick = args.quick;
const seconds = (s) => (quick ? s / 3 : s) * 1000;
const STREAMS = Number(args.streams);
const INTERVAL_MS = Number(args['interval-ms']);
const CHUNKS = quick ? 10 : 30;
const ROUNDS = quick ? 1 : Number(args.rounds);

if (!existsSync(here('../../packages/proxy/dist/index.mjs'))) {
  console.error('build the proxy first: pnpm --filter @es/proxy build');
  process.exit(1);
}

const fdLimit = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim());
// A proxy holds two sockets per open stream (client side and upstream side).
const idleStreams = Math.min(Number(args.idle), Math.floor((fdLimit - 64) / 2));

function start(file, argv = [], execArgv = []) {
  const child = fork(here(file), argv, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv,
  });
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve({ child, port: m.port }));
    child.once('exit', (code) => reject(new Error(`${file} exited with ${code}`)));
  });
}

function stats(child) {
  if (child === undefined) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    child.once('message', resolve);
    child.send('stats');
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nowNs = () => Number(process.hrtime.bigint());
function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const headers = { 'content-type': 'application/json' };
const chatBody = JSON.stringify({
  model: 'bench',
  messages: [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Write one sentence about foxes.' },
  ],
  max_tokens: 16,
});

const post = (pool, body) =>
  pool.request({ path: '/v1/chat/completions', method: 'POST', headers, body });

async function nonStreaming(url, concurrency, durationMs) {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1 });
  const latencies = [];
  let errors = 0;
  let measuring = false;
  let done = false;
  const loop = async () => {
    while (!done) {
      const t = nowNs();
      try {
        const { statusCode, body } = await post(pool, chatBody);
        await body.dump({ limit: 1 << 20 });
        if (statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      if (measuring) latencies.push((nowNs() - t) / 1e6);
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  await sleep(Math.min(1000, durationMs / 3));
  measuring = true;
  const start = nowNs();
  await sleep(durationMs);
  measuring = false;
  const elapsed = (nowNs() - start) / 1e9;
  done = true;
  await Promise.all(loops);
  await pool.close();
  return {
    rps: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
  };
}

// Stamped chunks (the bench upstream) give per-chunk latency; other engines' chunks are only
// counted (`data: {` events).
async function streaming(url, child, streams, chunks, intervalMs, stamped = true) {
  const pool = new Pool(url, { connections: streams, pipelining: 1 });
  const body = JSON.stringify({
    model: 'bench',
    messages: [{ role: 'user', content: 'stream please' }],
    stream: true,
    max_tokens: chunks,
    bench_interval_ms: intervalMs,
  });
  // Steady state only: from one interval after every stream is open to the first stream's
  // end, so connection set-up and teardown do not count as per-chunk cost or latency.
  const latencies = new Float64Array(streams * (chunks + 2));
  let count = 0;
  let windowChunks = 0;
  let errors = 0;
  let open = 0;
  let phase = 'ramp';
  let windowStart;
  let windowEnd;
  const before = await stats(child);
  const beginWindow = async () => {
    await sleep(intervalMs);
    if (phase !== 'ramp') return;
    windowStart = await stats(child);
    phase = 'window';
  };
  const endWindow = async () => {
    if (phase !== 'window') return;
    phase = 'done';
    windowEnd = await stats(child);
  };
  const one = async (i) => {
    // Spread stream starts over one interval so chunks are not sent in lockstep.
    await sleep((i * intervalMs) / streams);
    try {
      const res = await post(pool, body);
      if (++open === streams) void beginWindow();
      for await (const data of res.body) {
        const received = nowNs();
        const text = data.toString('latin1');
        if (!stamped) {
          if (phase !== 'window') continue;
          for (let at = text.indexOf('data: {'); at >= 0; at = text.indexOf('data: {', at + 7)) {
            windowChunks++;
          }
          continue;
        }
        let at = text.indexOf('"t":"');
        while (at >= 0) {
          const end = text.indexOf('"', at + 5);
          if (phase === 'window') {
            latencies[count++] = (received - Number(text.slice(at + 5, end))) / 1e3;
            windowChunks++;
          }
          at = text.indexOf('"t":"', end);
        }
      }
      if (phase === 'window') void endWindow();
    } catch {
      errors++;
    }
  };
  await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
  await pool.close();
  const measured = latencies.subarray(0, count);
  const result = {
    chunks: windowChunks,
    errors,
    p50us: percentile(measured, 50),
    p99us: percentile(measured, 99),
  };
  if (before !== undefined && windowStart !== undefined && windowEnd !== undefined) {
    const cpu = (s) => s.cpu.user + s.cpu.system;
    result.cpuMsPer1000Chunks = ((cpu(windowEnd) - cpu(windowStart)) / 1000 / windowChunks) * 1000;
    result.rssMBPer1000Streams =
      ((Math.max(windowEnd.rss, windowStart.rss) - before.rss) / 2 ** 20) * (1000 / streams);
  }
  return result;
}

async function idle(url, child, streams, holdMs) {
  const pool = new Pool(url, { connections: streams, pipelining: 1 });
  const body = JSON.stringify({ model: 'bench', messages: [], stream: true, bench_idle: true });
  const before = await stats(child);
  let opened = 0;
  let failed = 0;
  let endedEarly = 0;
  let holding = true;
  const bodies = [];
  const openOne = async () => {
    try {
      const res = await post(pool, body);
      await new Promise((resolve, reject) => {
        res.body.once('data', resolve);
        res.body.once('error', reject);
      });
      res.body.on('end', () => holding && endedEarly++);
      res.body.on('error', () => holding && endedEarly++);
      res.body.resume();
      bodies.push(res.body);
      opened++;
    } catch {
      failed++;
    }
  };
  const t = nowNs();
  for (let i = 0; i < streams; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, streams - i) }, openOne));
  }
  const openSeconds = (nowNs() - t) / 1e9;
  await sleep(holdMs);
  const held = await stats(child);
  holding = false;
  for (const b of bodies) b.destroy();
  await pool.destroy();
  // Every stream the clients dropped must be cancelled upstream and released.
  let released;
  for (let i = 0; i < 50; i++) {
    released = await stats(child);
    if (released === undefined || released.inFlight === undefined || released.inFlight === 0) break;
    await sleep(100);
  }
  return {
    streams,
    opened,
    failed,
    endedEarly,
    openSeconds,
    rssMBPer1000Streams:
      held === undefined ? undefined : ((held.rss - before.rss) / 2 ** 20) * (1000 / streams),
    inFlightAfterClose: released?.inFlight,
  };
}

const MOCK_CLI = here('../../packages/mock-engine/dist/cli.mjs');

/** A real @es/mock-engine process serving `bench`, or undefined when it is not built. */
async function startMockEngine(flags) {
  if (!existsSync(MOCK_CLI)) return undefined;
  const child = spawn(
    process.execPath,
    [MOCK_CLI, '--port', '0', '--served-model-name', 'bench', '--ttft', '0', ...flags],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise((resolve) => {
    let out = '';
    child.stdout.on('data', (data) => {
      out += data.toString();
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match !== null) resolve(match[1]);
    });
    child.once('exit', () => resolve(undefined));
  });
  if (url === undefined) return undefined;
  return { child, url, port: Number(new URL(url).port) };
}

const upstream = await start('upstream.mjs');
const baseline = await start('baseline.mjs', [String(upstream.port)]);
// BENCH_PROXY_NODE_ARGS, e.g. "--cpu-prof", profiles the proxy process.
const proxy = await start(
  'proxy.mjs',
  [String(upstream.port)],
  (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(' ').filter(Boolean),
);
const targets = {
  direct: { url: `http://127.0.0.1:${upstream.port}`, child: undefined },
  baseline: { url: `http://127.0.0.1:${baseline.port}`, child: baseline.child },
  proxy: { url: `http://127.0.0.1:${proxy.port}`, child: proxy.child },
};
const results = { direct: {}, baseline: {}, proxy: {} };
const log = (...parts) => console.error(...parts);

try {
  const run = (phase) => args.only === 'all' || args.only === phase;
  for (const concurrency of run('latency') ? [1, 64] : []) {
    for (const [name, target] of Object.entries(targets)) {
      log(`non-streaming c=${concurrency} ${name}`);
      results[name][`c${concurrency}`] = await nonStreaming(target.url, concurrency, seconds(3));
    }
  }
  // Streaming tails are noisy on a shared 2-core machine: run rounds, targets interleaved,
  // and report the median of each figure.
  const rounds = { direct: [], baseline: [], proxy: [] };
  for (let round = 1; run('stream') && round <= ROUNDS; round++) {
    for (const [name, target] of Object.entries(targets)) {
      log(
        `streaming round ${round}/${ROUNDS}: ${STREAMS} streams x ${CHUNKS} chunks every ${INTERVAL_MS} ms: ${name}`,
      );
      rounds[name].push(await streaming(target.url, target.child, STREAMS, CHUNKS, INTERVAL_MS));
    }
  }
  for (const [name, list] of Object.entries(rounds)) {
    if (list.length === 0) continue;
    const median = (key) => percentile(list.map((r) => r[key]).filter(Number.isFinite), 50);
    results[name].stream = {
      chunks: list.reduce((n, r) => n + r.chunks, 0),
      errors: list.reduce((n, r) => n + r.errors, 0),
      p50us: median('p50us'),
      p99us: median('p99us'),
      cpuMsPer1000Chunks: median('cpuMsPer1000Chunks'),
      // RSS: the largest round (later rounds start from a heap the first one already grew).
      rssMBPer1000Streams: Math.max(...list.map((r) => r.rssMBPer1000Streams ?? NaN)),
      rounds: list,
    };
  }
  for (const name of run('idle') ? ['baseline', 'proxy'] : []) {
    log(`idle: ${idleStreams} streams held open: ${name}`);
    results[name].idle = await idle(
      targets[name].url,
      targets[name].child,
      idleStreams,
      seconds(5),
    );
  }
} finally {
  for (const child of [upstream.child, baseline.child, proxy.child]) child.kill('SIGINT');
}

// The same proxies in front of the project's mock engine (tokenizer, metrics and all): a
// realistic upstream, which saturates before the proxies do, so read these as a check.
const mock = { baseline: {}, proxy: {}, direct: {} };
let mockNote = '';
if (args.only === 'all' || args.only === 'mock') {
  const children = [];
  try {
    const fast = await startMockEngine(['--tokens-per-second', '0', '--max-tokens-default', '16']);
    const slow = await startMockEngine(['--tokens-per-second', String(1000 / INTERVAL_MS)]);
    if (fast === undefined || slow === undefined) {
      mockNote = 'mock engine not built (pnpm --filter @es/mock-engine build): section skipped';
    } else {
      children.push(fast.child, slow.child);
      for (const [engine, phase] of [
        [fast, 'latency'],
        [slow, 'stream'],
      ]) {
        const pipe = await start('baseline.mjs', [String(engine.port)]);
        const ours = await start('proxy.mjs', [String(engine.port)]);
        children.push(pipe.child, ours.child);
        const mockTargets = {
          direct: { url: engine.url, child: undefined },
          baseline: { url: `http://127.0.0.1:${pipe.port}`, child: pipe.child },
          proxy: { url: `http://127.0.0.1:${ours.port}`, child: ours.child },
        };
        for (const [name, target] of Object.entries(mockTargets)) {
          if (phase === 'latency') {
            log(`mock engine, non-streaming c=1 and c=64: ${name}`);
            mock[name].c1 = await nonStreaming(target.url, 1, seconds(2));
            mock[name].c64 = await nonStreaming(target.url, 64, seconds(3));
          } else if (name !== 'direct') {
            log(
              `mock engine, ${STREAMS} streams x ${CHUNKS} tokens at ${1000 / INTERVAL_MS}/s: ${name}`,
            );
            mock[name].stream = await streaming(
              target.url,
              target.child,
              STREAMS,
              CHUNKS,
              INTERVAL_MS,
              false,
            );
          }
        }
      }
    }
  } finally {
    for (const child of children) child.kill('SIGINT');
  }
}

const fmt = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const d = results.direct;
const rows = [];
const line = (label, fn) =>
  rows.push([
    label,
    ...['baseline', 'proxy'].map((name) => {
      try {
        return fn(results[name]);
      } catch {
        return 'n/a';
      }
    }),
  ]);
line('non-streaming req/s, c=64 (saturation)', (r) => fmt(r.c64.rps, 0));
line('added p50 latency ms, c=1', (r) => fmt(r.c1.p50 - d.c1.p50, 3));
line('added p99 latency ms, c=1', (r) => fmt(r.c1.p99 - d.c1.p99, 3));
line('added p50 latency ms, c=64', (r) => fmt(r.c64.p50 - d.c64.p50, 3));
line('added p99 latency ms, c=64', (r) => fmt(r.c64.p99 - d.c64.p99, 3));
line(`added per-chunk p50 ms, ${STREAMS} streams`, (r) =>
  fmt((r.stream.p50us - d.stream.p50us) / 1000, 3),
);
line(`added per-chunk p99 ms, ${STREAMS} streams`, (r) =>
  fmt((r.stream.p99us - d.stream.p99us) / 1000, 3),
);
line('proxy CPU ms per 1,000 chunks', (r) => fmt(r.stream.cpuMsPer1000Chunks));
line('proxy RSS MB per 1,000 open streams (streaming)', (r) => fmt(r.stream.rssMBPer1000Streams));
line(
  `idle streams held (of ${idleStreams})`,
  (r) => `${r.idle.opened - r.idle.endedEarly} (${r.idle.failed} failed)`,
);
line('proxy RSS MB per 1,000 idle streams', (r) => fmt(r.idle.rssMBPer1000Streams));
line(
  'errors (non-streaming / streaming)',
  (r) => `${r.c1.errors + r.c64.errors} / ${r.stream.errors}`,
);

const p = results.proxy;
const b = results.baseline;
const safe = (fn) => {
  try {
    return fn();
  } catch {
    return NaN;
  }
};
const checks = [
  [
    'throughput >= 0.6 x baseline',
    safe(() => p.c64.rps / b.c64.rps),
    (v) => v >= 0.6,
    (v) => `${fmt(v)} x`,
  ],
  [
    'added p50 <= 0.3 ms at c=1',
    safe(() => p.c1.p50 - d.c1.p50),
    (v) => v <= 0.3,
    (v) => `${fmt(v, 3)} ms`,
  ],
  [
    'added per-chunk p99 <= 1 ms',
    safe(() => (p.stream.p99us - d.stream.p99us) / 1000),
    (v) => v <= 1,
    (v) => `${fmt(v, 3)} ms`,
  ],
  [
    'CPU <= 10 ms per 1,000 chunks',
    safe(() => p.stream.cpuMsPer1000Chunks),
    (v) => v <= 10,
    (v) => `${fmt(v)} ms`,
  ],
  [
    'RSS <= 40 MB per 1,000 streams',
    safe(() => p.stream.rssMBPer1000Streams),
    (v) => v <= 40,
    (v) => `${fmt(v)} MB`,
  ],
  [
    '10,000 idle streams held without errors',
    safe(() => p.idle.opened - p.idle.endedEarly),
    (v) => v === 10_000 && p.idle.failed === 0,
    (v) =>
      `${v} held${idleStreams < Number(args.idle) ? ` (fd limit ${fdLimit} caps a proxy at ${idleStreams})` : ''}`,
  ],
];

console.log(
  `\n## Proxy benchmark (${new Date().toISOString()}, ${quick ? 'quick' : 'default'} run)\n`,
);
const direct = safe(() => d.c1.p50) + safe(() => d.stream.p50us);
if (Number.isFinite(direct))
  console.log(
    `direct to engine: c=1 p50 ${fmt(d.c1.p50, 3)} ms, c=64 ${fmt(d.c64.rps, 0)} req/s; per-chunk p50 ${fmt(d.stream.p50us / 1000, 3)} ms p99 ${fmt(d.stream.p99us / 1000, 3)} ms\n`,
  );
console.log('| figure | raw node:http pipe | @es/proxy | ratio proxy/pipe |');
console.log('|---|---|---|---|');
for (const [label, base, ours] of rows) {
  const ratio =
    Number(base) > 0 && Number.isFinite(Number(ours)) ? fmt(Number(ours) / Number(base)) : '';
  console.log(`| ${label} | ${base} | ${ours} | ${ratio} |`);
}
console.log('\n| target | measured | met |');
console.log('|---|---|---|');
for (const [label, value, ok, show] of checks.filter(([, value]) => !Number.isNaN(value)))
  console.log(`| ${label} | ${show(value)} | ${ok(value) ? 'yes' : 'NO'} |`);
if (mockNote !== '') console.log(`\n${mockNote}`);
else if (mock.proxy.c64 !== undefined || mock.proxy.stream !== undefined) {
  console.log('\n### Same proxies in front of @es/mock-engine\n');
  console.log('| figure | raw node:http pipe | @es/proxy | ratio proxy/pipe |');
  console.log('|---|---|---|---|');
  const mockRows = [
    [
      'non-streaming req/s, c=64 (engine alone: ' +
        fmt(
          safe(() => mock.direct.c64.rps),
          0,
        ) +
        ')',
      (r) => r.c64.rps,
      0,
    ],
    ['added p50 latency ms, c=1', (r) => r.c1.p50 - mock.direct.c1.p50, 3],
    ['added p99 latency ms, c=1', (r) => r.c1.p99 - mock.direct.c1.p99, 3],
    ['proxy CPU ms per 1,000 chunks', (r) => r.stream.cpuMsPer1000Chunks, 2],
    ['proxy RSS MB per 1,000 open streams', (r) => r.stream.rssMBPer1000Streams, 2],
    [
      'errors (non-streaming / streaming)',
      (r) => `${r.c1.errors + r.c64.errors} / ${r.stream.errors}`,
    ],
  ];
  for (const [label, fn, digits] of mockRows) {
    const values = ['baseline', 'proxy'].map((name) => safe(() => fn(mock[name])));
    const shown = values.map((v) => (typeof v === 'string' ? v : fmt(v, digits)));
    const ratio = typeof values[0] === 'number' && values[0] > 0 ? fmt(values[1] / values[0]) : '';
    console.log(`| ${label} | ${shown[0]} | ${shown[1]} | ${ratio} |`);
  }
}
console.log(
  `\nproxy in-flight after all idle streams were dropped: ${safe(() => p.idle.inFlightAfterClose)}`,
);
if (args.json) console.log(JSON.stringify({ results, mock }, null, 2));
