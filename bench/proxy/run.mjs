/* global process, console */
// Proxy benchmark: @es/proxy (with continuation, the default, and without), the deployed
// scheduler and two raw pipe proxies (node:http, and node:http + undici as @es/proxy uses),
// each its own process, in front of the same engines, driven from this one over 127.0.0.1.
// See README.md for the method.
//
//   pnpm build && node bench/proxy/run.mjs [--quick] [--write-readme] [--plant-corrupt]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { idle, nonStreaming, streaming } from './load.mjs';
import {
  SCHEDULER_CLI,
  childStats,
  here,
  procStats,
  sleep,
  startChild,
  startScheduler,
} from './processes.mjs';
import { collectProvenance, render, writeOutputs } from './report.mjs';
import { selfCheck } from './verify.mjs';
import { benchWorkload, mockWorkload } from './workloads.mjs';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    idle: { type: 'string' },
    streams: { type: 'string' },
    chunks: { type: 'string' },
    'interval-ms': { type: 'string', default: '100' },
    rounds: { type: 'string', default: '3' },
    'sample-ms': { type: 'string', default: '700' },
    only: { type: 'string', default: 'all' },
    json: { type: 'boolean', default: false },
    'write-readme': { type: 'boolean', default: false },
    'plant-corrupt': { type: 'boolean', default: false },
    'self-check': { type: 'boolean', default: false },
  },
});
const began = Date.now();
const log = (...parts) =>
  console.error(`[${((Date.now() - began) / 1000).toFixed(0).padStart(3)} s]`, ...parts);

// The checks must be able to fail, or "0 failures" means nothing.
const selfCheckFailures = selfCheck();
if (selfCheckFailures.length > 0) {
  log(`response checks self-check FAILED:\n  ${selfCheckFailures.join('\n  ')}`);
  process.exit(1);
}
if (args['self-check']) {
  log(
    'response checks self-check: every planted defect was reported, every correct response passed',
  );
  process.exit(0);
}
if (args['write-readme'] && args['plant-corrupt']) {
  log('--write-readme with --plant-corrupt would publish planted failures: refused');
  process.exit(2);
}
for (const dist of [
  '../../packages/proxy/dist/index.mjs',
  '../../packages/pool/dist/index.mjs',
  '../../packages/protocol/dist/index.mjs',
]) {
  if (!existsSync(here(dist))) {
    log('build first: pnpm build (at the repository root)');
    process.exit(1);
  }
}

const provenance = collectProvenance();
const quick = args.quick;
const settings = {
  quick,
  rounds: quick ? 1 : Number(args.rounds),
  // Quick: fewer streams, so that they can all be open at once within a 1 s stream.
  streams: Number(args.streams ?? (quick ? 300 : 1000)),
  intervalMs: Number(args['interval-ms']),
  chunks: Number(args.chunks ?? (quick ? 10 : 25)),
  warmupMs: quick ? 300 : 400,
  settleMs: 100,
  sampleMs: quick ? 400 : Number(args['sample-ms']),
  holdMs: quick ? 1000 : 2000,
  plantCorrupt: args['plant-corrupt'],
};
const fdLimit = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim());
// A proxy holds two sockets per open stream (client side and upstream side).
settings.idleWanted = Number(args.idle ?? (quick ? 2000 : 10_000));
settings.idleStreams = Math.min(settings.idleWanted, Math.floor((fdLimit - 64) / 2));
settings.fdLimit = fdLimit;
const run = (phase) => args.only === 'all' || args.only === phase;

/** Round r visits the targets starting from the r-th, so no target always goes first. */
async function inRounds(label, targets, sample) {
  const names = Object.keys(targets);
  const out = Object.fromEntries(names.map((name) => [name, []]));
  for (let r = 0; r < settings.rounds; r++) {
    for (const name of [...names.slice(r % names.length), ...names.slice(0, r % names.length)]) {
      log(`${label}, round ${r + 1}/${settings.rounds}: ${name}`);
      out[name].push(await sample(targets[name]));
    }
  }
  return out;
}

/** Warm-up (connections, JIT) of every target, then interleaved rounds at c=1 and c=64. */
async function latencyPhase(label, targets, workload) {
  const warmup = {};
  for (const [name, target] of Object.entries(targets)) {
    log(`${label}, warm-up: ${name}`);
    warmup[name] = await nonStreaming(target, workload, {
      concurrency: 64,
      settleMs: 0,
      durationMs: settings.warmupMs,
    });
  }
  const sample = (target, concurrency) =>
    nonStreaming(target, workload, {
      concurrency,
      settleMs: settings.settleMs,
      durationMs: settings.sampleMs,
    });
  const rounds = await inRounds(`${label}, non-streaming c=1 and c=64`, targets, async (t) => ({
    c1: await sample(t, 1),
    c64: await sample(t, 64),
  }));
  return { warmup, rounds };
}

/**
 * A short warm-up of every target (a fifth of the streams, 5 chunks: cold code and fresh
 * processes otherwise open the first round's streams too slowly for a steady state), then
 * interleaved rounds.
 */
async function streamPhase(label, targets, workload, streams) {
  const warmup = {};
  for (const [name, target] of Object.entries(targets)) {
    log(`${label}, streaming warm-up: ${name}`);
    warmup[name] = await streaming(target, workload, {
      ...settings,
      streams: Math.ceil(streams / 5),
      chunks: 3,
    });
  }
  const rounds = await inRounds(
    `${label}, ${streams} streams x ${settings.chunks} chunks every ${settings.intervalMs} ms`,
    targets,
    (target) => streaming(target, workload, { ...settings, streams }),
  );
  return { streams, warmup, rounds };
}

const ipcTarget = (server, headers) => ({
  url: server.url,
  headers,
  stats: () => childStats(server.child),
});

const children = [];
async function start(file, argv, execArgv) {
  const server = await startChild(file, argv, execArgv);
  children.push(server.child);
  return server;
}

/** The bench upstream: direct, the two pipes and the bare proxy without and with continuation. */
async function benchSection() {
  const section = {};
  const upstream = await start('upstream.mjs', settings.plantCorrupt ? ['--plant-corrupt'] : []);
  const headers = { 'content-type': 'application/json' };
  // BENCH_PROXY_NODE_ARGS, e.g. "--cpu-prof", profiles the proxy process.
  const proxyArgs = (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const proxyServer = await start('proxy.mjs', [upstream.url], proxyArgs);
  const noContinuation = await start('proxy.mjs', ['--no-continuation', upstream.url], proxyArgs);
  const targets = {
    direct: { url: upstream.url, headers },
    nodePipe: ipcTarget(await start('node-pipe.mjs', [upstream.url]), headers),
    undiciPipe: ipcTarget(await start('undici-pipe.mjs', [upstream.url]), headers),
    proxyNoContinuation: ipcTarget(noContinuation, headers),
    proxy: ipcTarget(proxyServer, headers),
  };
  const workload = benchWorkload(settings);
  if (run('latency')) section.latency = await latencyPhase('bench upstream', targets, workload);
  if (run('stream')) {
    section.stream = await streamPhase('bench upstream', targets, workload, settings.streams);
  }
  if (run('idle')) {
    section.idle = {};
    for (const name of ['proxy', 'proxyNoContinuation', 'undiciPipe', 'nodePipe']) {
      // The upstream must have shed the previous target's 10,000 sockets (see upstream.mjs),
      // or the two together would exceed its fd limit.
      for (let i = 0; i < 100; i++) {
        if ((await childStats(upstream.child)).connections <= 100) break;
        await sleep(100);
      }
      log(`bench upstream, ${settings.idleStreams} idle streams held open: ${name}`);
      section.idle[name] = await idle(targets[name], workload, {
        streams: settings.idleStreams,
        holdMs: settings.holdMs,
      });
    }
  }
  section.planted = (await childStats(upstream.child)).planted;
  return section;
}

/**
 * @es/mock-engine processes started by the deployed scheduler (one deployment answering
 * completions at once, one streaming at 1000/interval tokens/s), with the direct route, the
 * two pipes and the bare proxy (without and with continuation) in front of the very same
 * engine processes.
 */
async function mockSection() {
  const apiKey = `bench-${randomBytes(8).toString('hex')}`;
  const adminKey = `admin-${randomBytes(8).toString('hex')}`;
  const engineArgs = {
    'bench-fast': ['--tokens-per-second', '0', '--ttft', '0', '--max-tokens-default', '16'],
    'bench-stream': ['--tokens-per-second', String(1000 / settings.intervalMs), '--ttft', '0'],
  };
  log('mock engine: starting the deployed scheduler');
  const scheduler = await startScheduler({
    deployments: Object.entries(engineArgs).map(([model, a]) => ({ model, engineArgs: a })),
    apiKey,
    adminKey,
  });
  const section = { engineArgs, scheduler: { argv: scheduler.argv } };
  try {
    // Each engine behind its worker's front, with its own job's key.
    const engineHeaders = (model) => ({
      'content-type': 'application/json',
      authorization: `Bearer ${scheduler.engineKeys[model]}`,
    });
    const workload = await mockWorkload({
      url: scheduler.engines['bench-fast'],
      streamUrl: scheduler.engines['bench-stream'],
      headers: engineHeaders('bench-fast'),
      streamHeaders: engineHeaders('bench-stream'),
      fastModel: 'bench-fast',
      streamModel: 'bench-stream',
      chunks: settings.chunks,
    });
    const schedulerTarget = {
      url: scheduler.url,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
      stats: async () => procStats(scheduler.child.pid),
    };
    for (const [phase, model] of [
      ['latency', 'bench-fast'],
      ['stream', 'bench-stream'],
    ]) {
      const engine = scheduler.engines[model];
      const own = [];
      const server = async (file, argv) => {
        const s = await startChild(file, argv);
        own.push(s.child);
        return ipcTarget(s, engineHeaders(model));
      };
      try {
        const targets = {
          direct: { url: engine, headers: engineHeaders(model) },
          nodePipe: await server('node-pipe.mjs', [engine]),
          undiciPipe: await server('undici-pipe.mjs', [engine]),
          proxyNoContinuation: await server('proxy.mjs', [
            '--no-continuation',
            engine,
            model,
            scheduler.engineKeys[model],
          ]),
          proxy: await server('proxy.mjs', [engine, model, scheduler.engineKeys[model]]),
          scheduler: schedulerTarget,
        };
        if (phase === 'latency') {
          section.latency = await latencyPhase('mock engine', targets, workload);
        } else {
          // The mock engine does not stamp its chunks: no per-chunk latency to subtract from.
          const { direct: _direct, ...proxies } = targets;
          // Half the streams: the mock engine's own work per new stream (tokenizer, chat
          // template) makes opening 1,000 take most of a stream's life on 2 shared cores,
          // leaving no steady state to measure.
          const streams = Math.ceil(settings.streams / 2);
          section.stream = await streamPhase('mock engine', proxies, workload, streams);
        }
      } finally {
        for (const child of own) child.kill('SIGINT');
      }
    }
    section.scheduler.requestsCounted = await scheduler.requestsCounted();
  } finally {
    await scheduler.stop();
  }
  return section;
}

const results = { provenance, settings };
try {
  if (['all', 'latency', 'stream', 'idle'].includes(args.only))
    results.bench = await benchSection();
} finally {
  for (const child of children.splice(0)) child.kill('SIGINT');
}
if (!settings.plantCorrupt && (args.only === 'all' || args.only === 'mock')) {
  if (existsSync(SCHEDULER_CLI)) results.mock = await mockSection();
  else results.mockNote = 'apps/scheduler not built (pnpm build): mock-engine section skipped';
}
provenance.finish();

const report = render(results);
console.log(report.text);
if (args.json) console.log(JSON.stringify(results, null, 2));
if (args['write-readme']) {
  await writeOutputs(results, report);
  log('wrote bench/proxy/README.md (figures section) and bench/proxy/results.json');
}
process.exitCode = report.exitCode;
