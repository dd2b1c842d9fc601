/* global process, console */
// Proxy benchmark: @es/proxy (with continuation, the default, and without), the deployed
// scheduler and two raw pipe proxies (node:http, and node:http + undici as @es/proxy uses),
// each its own process, in front of the same engines, driven from this one over 127.0.0.1;
// then what keeping the generated ids costs (cost.mjs) and the client's extra wait at a
// splice (splice.mjs). See README.md for the method.
//
//   pnpm build && node bench/proxy/run.mjs [--quick] [--write-readme] [--plant-corrupt]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { costSection } from './cost.mjs';
import { idle, nonStreaming, streaming } from './load.mjs';
import { NGINX_MISSING, startNginx } from './nginx.mjs';
import {
  ES_PROXY,
  SCHEDULER_CLI,
  childStats,
  here,
  proxyNodeArgs,
  sleep,
  startChild,
  startEsProxy,
  startScheduler,
} from './processes.mjs';
import { collectProvenance, render, writeOutputs } from './report.mjs';
import { spliceSection } from './splice.mjs';
import { spliceSelfCheck } from './splice-judge.mjs';
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
    'tokens-per-gpu': { type: 'string' },
  },
});
const began = Date.now();
const log = (...parts) =>
  console.error(`[${((Date.now() - began) / 1000).toFixed(0).padStart(3)} s]`, ...parts);

// The checks must be able to fail, or "0 failures" means nothing.
const selfCheckFailures = [...selfCheck(), ...spliceSelfCheck()];
if (selfCheckFailures.length > 0) {
  log(`response checks self-check FAILED:\n  ${selfCheckFailures.join('\n  ')}`);
  process.exit(1);
}
if (args['self-check']) {
  log(
    'response and splice checks self-check: every planted defect was reported, every correct response passed',
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
  '../../packages/mock-engine/dist/index.mjs',
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
  // The capacity estimate's assumed output tokens/s per GPU (see report.mjs CAPACITY).
  tokensPerGpu: args['tokens-per-gpu'] === undefined ? undefined : Number(args['tokens-per-gpu']),
};
const fdLimit = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim());
// A proxy holds two sockets per open stream (client side and upstream side).
settings.idleWanted = Number(args.idle ?? (quick ? 2000 : 10_000));
settings.idleStreams = Math.min(settings.idleWanted, Math.floor((fdLimit - 64) / 2));
settings.fdLimit = fdLimit;
const run = (phase) => args.only === 'all' || args.only === phase;
const ONLY = ['all', 'latency', 'stream', 'idle', 'mock', 'cost', 'splice'];
if (!ONLY.includes(args.only)) {
  log(`--only ${args.only}: one of ${ONLY.join(', ')}`);
  process.exit(2);
}

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

/** Data-plane process counts measured: `es-proxy --processes N`. */
const DATA_PLANE_PROCESSES = [1, 2];

/**
 * The data plane as deployed: a watch server (its own process: watch-server.mjs, a registry
 * with `workers` registered ready, served by createRoutingWatchServer with the report route)
 * feeding `es-proxy --processes 1` and `--processes 2`. Their targets (named dataPlane1,
 * dataPlane2) and `stop()`; with `secretFile` undefined a fresh secret is made. Without a built
 * es-proxy, no targets and a note.
 */
async function startDataPlanes({ workers, secretFile, headers, own }) {
  if (!existsSync(ES_PROXY)) {
    return {
      targets: {},
      note: 'apps/proxy not built (pnpm build): the es-proxy rows are skipped',
      stop: async () => {},
    };
  }
  let dir;
  if (secretFile === undefined) {
    dir = mkdtempSync(join(tmpdir(), 'es-bench-secret-'));
    secretFile = join(dir, 'secret');
    writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  }
  const watch = await startChild('watch-server.mjs', [JSON.stringify({ secretFile, workers })]);
  own.push(watch.child);
  const planes = [];
  const stop = async () => {
    for (const p of planes.splice(0)) await p.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const targets = {};
    const argv = {};
    for (const n of DATA_PLANE_PROCESSES) {
      const p = await startEsProxy({ watchUrl: watch.url, secretFile, processes: n });
      planes.push(p);
      targets[`dataPlane${n}`] = { url: p.url, headers, stats: p.stats };
      argv[`dataPlane${n}`] = p.argv;
    }
    return { targets, argv, watch, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** nginx in front of `upstream` as a target, or a note that says why there is none. */
async function nginxTarget(upstream, headers, stops) {
  const nginx = await startNginx(upstream, fdLimit);
  if (nginx === undefined) return { targets: {}, note: NGINX_MISSING };
  stops.push(nginx.stop);
  return {
    targets: { nginx: { url: nginx.url, headers, stats: nginx.stats } },
    config: nginx.config,
    version: nginx.version,
  };
}

/** The bench upstream: direct, the two pipes and the bare proxy without and with continuation. */
async function benchSection() {
  const section = {};
  const upstream = await start('upstream.mjs', settings.plantCorrupt ? ['--plant-corrupt'] : []);
  const headers = { 'content-type': 'application/json' };
  const proxyArgs = proxyNodeArgs();
  const proxyServer = await start('proxy.mjs', [upstream.url], proxyArgs);
  const noContinuation = await start('proxy.mjs', ['--no-continuation', upstream.url], proxyArgs);
  const planes = await startDataPlanes({
    workers: [{ model: 'bench', url: upstream.url, jobId: 'bench-1' }],
    headers,
    own: children,
  });
  stops.push(planes.stop);
  const nginx = await nginxTarget(upstream.url, headers, stops);
  section.dataPlane = { argv: planes.argv, note: planes.note, watch: planes.watch };
  section.nginx = { config: nginx.config, version: nginx.version, note: nginx.note };
  if (nginx.note !== undefined) log(nginx.note);
  const targets = {
    direct: { url: upstream.url, headers },
    nodePipe: ipcTarget(await start('node-pipe.mjs', [upstream.url]), headers),
    undiciPipe: ipcTarget(await start('undici-pipe.mjs', [upstream.url]), headers),
    proxyNoContinuation: ipcTarget(noContinuation, headers),
    proxy: ipcTarget(proxyServer, headers),
    ...nginx.targets,
    ...planes.targets,
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
  if (planes.watch !== undefined) {
    // The es-proxy processes reported to the watch server, signed with the data-plane key.
    const { reports, refusedReports } = await childStats(planes.watch.child);
    section.dataPlane.reports = { accepted: reports, refused: refusedReports };
  }
  delete section.dataPlane.watch;
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
  const sectionChildren = [];
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
      stats: scheduler.stats,
    };
    // The same engines, in the scheduler's table under the scheduler's job ids, fed to
    // es-proxy processes by a watch server of the bench's (the es-proxy processes derive each
    // engine's key from the scheduler's secret, as they do behind it).
    const planes = await startDataPlanes({
      workers: Object.keys(engineArgs).map((model) => ({
        model,
        url: scheduler.engines[model],
        jobId: scheduler.jobIds[model],
      })),
      secretFile: scheduler.secretFile,
      headers: { 'content-type': 'application/json' },
      own: sectionChildren,
    });
    stops.push(planes.stop);
    section.dataPlane = { argv: planes.argv, note: planes.note };
    for (const [phase, model] of [
      ['latency', 'bench-fast'],
      ['stream', 'bench-stream'],
    ]) {
      const engine = scheduler.engines[model];
      const own = [];
      const phaseStops = [];
      const server = async (file, argv) => {
        const s = await startChild(file, argv);
        own.push(s.child);
        return ipcTarget(s, engineHeaders(model));
      };
      try {
        const nginx = await nginxTarget(engine, engineHeaders(model), phaseStops);
        section.nginx = { version: nginx.version, note: nginx.note };
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
          ...nginx.targets,
          ...planes.targets,
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
        for (const stop of phaseStops) await stop();
        for (const child of own) child.kill('SIGINT');
      }
    }
    section.scheduler.requestsCounted = await scheduler.requestsCounted();
    if (planes.watch !== undefined) {
      const { reports, refusedReports } = await childStats(planes.watch.child);
      section.dataPlane.reports = { accepted: reports, refused: refusedReports };
    }
  } finally {
    for (const stop of stops.splice(0)) await stop();
    for (const child of sectionChildren) child.kill('SIGINT');
    await scheduler.stop();
  }
  return section;
}

const results = { provenance, settings };
/** Servers that are not this folder's forked children (es-proxy, nginx): stopped after a section. */
const stops = [];
try {
  if (['all', 'latency', 'stream', 'idle'].includes(args.only))
    results.bench = await benchSection();
} finally {
  for (const stop of stops.splice(0)) await stop();
  for (const child of children.splice(0)) child.kill('SIGINT');
}
// What keeping the generated ids costs (no planted defects there: its figures are the point).
if (!settings.plantCorrupt && run('cost')) results.cost = await costSection(settings, log);
// The client's extra wait at a splice (with --plant-corrupt: wrong splices planted).
if (run('splice')) results.splice = await spliceSection(settings, log);
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
