/* global process */
// The benchmark's report: provenance of the run, medians over rounds, the markdown tables, and
// (with --write-readme) README.md's figures section and results.json, both from this one run.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { CHUNK_CPU_GOAL, summarizeCost } from './cost.mjs';
import { here } from './processes.mjs';
import { summarizeSplice } from './splice.mjs';

const ROOT = here('../..');
const README = here('README.md');
const RESULTS = here('results.json');
const START = '<!-- figures:start -->';
const END = '<!-- figures:end -->';

/** The built code measured: the checkout is shared, so the dists may not match the commit. */
const DISTS = [
  'packages/proxy/dist/index.mjs',
  'apps/scheduler/dist/cli.mjs',
  'packages/mock-engine/dist/cli.mjs',
];
function describeDist(path) {
  try {
    const file = join(ROOT, path);
    const hash = createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 12);
    return `${path} sha256:${hash} built ${statSync(file).mtime.toISOString()}`;
  } catch {
    return `${path} missing`;
  }
}

const git = (...argv) => execFileSync('git', argv, { cwd: ROOT }).toString().trimEnd();
const load = () => loadavg().map((v) => Number(v.toFixed(2)));

/** Where and how this run ran; `finish()` adds the end. */
export function collectProvenance() {
  const dirty = git('status', '--porcelain', '--untracked-files=no');
  const env = ['BENCH_PROXY_WEB_PATH', 'BENCH_PROXY_NODE_ARGS']
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${JSON.stringify(process.env[name])} `)
    .join('');
  const script = relative(ROOT, process.argv[1]);
  const provenance = {
    commit: `${git('rev-parse', 'HEAD')}${dirty === '' ? '' : '+dirty'}`,
    // Tracked files with changes: this checkout is shared, so the list says what differed.
    dirtyFiles: dirty === '' ? [] : dirty.split('\n').map((line) => line.slice(3)),
    command: `${env}node ${script}${process.argv
      .slice(2)
      .map((a) => ` ${a}`)
      .join('')}`,
    started: new Date().toISOString(),
    loadavgStart: load(),
    cpu: `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'}`,
    node: process.version,
    dists: DISTS.map(describeDist),
    finish() {
      provenance.finished = new Date().toISOString();
      provenance.loadavgEnd = load();
      provenance.seconds = Math.round(
        (Date.parse(provenance.finished) - Date.parse(provenance.started)) / 1000,
      );
    },
  };
  return provenance;
}

function median(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
const sum = (values) => values.reduce((n, v) => n + (v ?? 0), 0);

/** Per process of a multi-process target: the median over rounds of each process's figure. */
function partsMedian(perRound) {
  const present = perRound.filter((p) => p !== undefined);
  if (present.length === 0) return undefined;
  const keys = [...new Set(present.flatMap((p) => Object.keys(p)))];
  return Object.fromEntries(keys.map((k) => [k, median(present.map((p) => p[k]))]));
}

/** Medians over rounds; "added" figures subtract the direct route's figure of the same round. */
function summarizeLatency(latency) {
  if (latency === undefined) return {};
  const direct = latency.rounds.direct;
  const out = {};
  for (const [name, rounds] of Object.entries(latency.rounds)) {
    out[name] = {};
    for (const c of ['c1', 'c64']) {
      const added = (key) => median(rounds.map((r, i) => r[c][key] - direct[i][c][key]));
      out[name][c] = {
        rps: median(rounds.map((r) => r[c].rps)),
        p50: median(rounds.map((r) => r[c].p50)),
        p99: median(rounds.map((r) => r[c].p99)),
        addedP50: added('p50'),
        addedP99: added('p99'),
        cpuUsPerRequest: median(rounds.map((r) => r[c].cpuUsPerRequest)),
        perRound: rounds.map((r) => r[c].rps),
        perRoundCpu: rounds.map((r) => r[c].cpuUsPerRequest),
        parts: partsMedian(rounds.map((r) => r[c].partsCpuUsPerRequest)),
      };
    }
    const all = [latency.warmup[name], ...rounds.flatMap((r) => [r.c1, r.c64])];
    out[name].failed = sum(all.map((t) => t.failedAll));
    out[name].checked = sum(all.map((t) => t.checked));
  }
  return out;
}

function summarizeStream(stream, streams) {
  if (stream === undefined) return {};
  const direct = stream.rounds.direct;
  const out = {};
  for (const [name, rounds] of Object.entries(stream.rounds)) {
    const added = (key) =>
      direct === undefined ? NaN : median(rounds.map((r, i) => (r[key] - direct[i][key]) / 1000));
    out[name] = {
      p50ms: median(rounds.map((r) => r.p50us / 1000)),
      p99ms: median(rounds.map((r) => r.p99us / 1000)),
      addedP50ms: added('p50us'),
      addedP99ms: added('p99us'),
      cpuMsPer1000Chunks: median(rounds.map((r) => r.cpuMsPer1000Chunks)),
      // Against the RSS before the first round (the warm-up's few streams aside): later
      // rounds start from a heap the first one grew. The largest steady round.
      rssMBPer1000Streams:
        (Math.max(...rounds.filter((r) => r.steady).map((r) => r.rssOpen ?? -Infinity)) -
          stream.warmup[name]?.rssBefore) /
        2 ** 20 /
        (streams / 1000),
      chunks: sum(rounds.map((r) => r.chunks)),
      parts: partsMedian(rounds.map((r) => r.partsCpuUsPerChunk)),
      failed: sum([stream.warmup[name], ...rounds].map((r) => r?.failedAll)),
      checked: sum([stream.warmup[name], ...rounds].map((r) => r?.checked)),
      steadyRounds: rounds.filter((r) => r.steady).length,
      perRound: {
        windowMs: rounds.map((r) => r.windowMs),
        p99ms: rounds.map((r) => r.p99us / 1000),
        cpuMsPer1000Chunks: rounds.map((r) => r.cpuMsPer1000Chunks),
      },
    };
  }
  return out;
}

/** The per-target figures the tables show, from the raw results. */
export function summarize(results) {
  const section = (s) => {
    if (s === undefined) return undefined;
    const latency = summarizeLatency(s.latency);
    const stream = summarizeStream(s.stream, s.stream?.streams);
    const names = new Set([...Object.keys(latency), ...Object.keys(stream)]);
    return Object.fromEntries(
      [...names].map((name) => [
        name,
        { ...latency[name], stream: stream[name], idle: s.idle?.[name] },
      ]),
    );
  };
  return {
    bench: section(results.bench),
    mock: section(results.mock),
    cost: summarizeCost(results.cost),
    splice: summarizeSplice(results.splice),
  };
}

const fmt = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const get = (fn) => {
  try {
    return fn();
  } catch {
    return undefined;
  }
};

const LABELS = {
  direct: 'direct',
  nodePipe: 'node:http pipe',
  undiciPipe: 'undici pipe',
  proxyNoContinuation: '@es/proxy, continuation off',
  proxy: '@es/proxy',
  scheduler: 'scheduler',
  nginx: 'nginx',
  dataPlane1: 'es-proxy, 1 process',
  dataPlane2: 'es-proxy, 2 processes',
};

/**
 * A markdown table: one row per figure, one column per target, then `ratios` columns
 * ([numerator, denominator] target names, and the column's label if not "a / b"). Figures
 * with `added: true` show the direct route's absolute value in parentheses in its column.
 */
function table(summary, names, ratios, rows) {
  const head = [
    'figure',
    ...names.map((n) => LABELS[n]),
    ...ratios.map(([a, b, label]) => label ?? `${LABELS[a]} / ${LABELS[b]}`),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const row of rows) {
    const values = Object.fromEntries(names.map((n) => [n, get(() => row.value(summary[n]))]));
    const cells = names.map((n) => {
      if (n === 'direct' && row.proxiesOnly) return '';
      if (n === 'direct' && row.added) {
        const abs = get(() => row.absolute(summary.direct));
        return abs === undefined ? '' : `(${fmt(abs, row.digits)})`;
      }
      const v = values[n];
      return typeof v === 'string' ? v : v === undefined ? '' : fmt(v, row.digits);
    });
    const ratioCells = ratios.map(([a, b]) => {
      const [x, y] = [values[a], values[b]];
      return typeof x === 'number' && typeof y === 'number' && x > 0 && y > 0 && !row.noRatio
        ? fmt(x / y)
        : '';
    });
    // A phase left out (--only) leaves its rows empty: leave them out too.
    if (cells.every((cell) => cell === '' || cell === 'n/a')) continue;
    lines.push(`| ${[row.label, ...cells, ...ratioCells].join(' | ')} |`);
  }
  return lines.join('\n');
}

const latencyRows = [
  { label: 'served req/s, c=1', value: (r) => r.c1.rps, digits: 0 },
  { label: 'served req/s, c=64', value: (r) => r.c64.rps, digits: 0 },
  ...[
    ['c1', 'c=1'],
    ['c64', 'c=64'],
  ].flatMap(([c, shown]) =>
    ['50', '99'].map((p) => ({
      label: `added p${p} latency ms, ${shown}`,
      value: (r) => r[c][`addedP${p}`],
      absolute: (r) => r[c][`p${p}`],
      added: true,
      digits: 3,
    })),
  ),
];
const requestCpuRows = [
  ['c1', 'c=1'],
  ['c64', 'c=64'],
].map(([c, shown]) => ({
  label: `process CPU µs per request, ${shown}`,
  value: (r) => r[c].cpuUsPerRequest,
  proxiesOnly: true,
  digits: 1,
}));
const failuresRow = {
  label: 'failed / checked responses (non-streaming; streams)',
  value: (r) =>
    `${r.failed ?? '–'} / ${r.checked ?? '–'}; ${r.stream?.failed ?? '–'} / ${r.stream?.checked ?? '–'}`,
};
const cpuRows = [
  {
    label: 'streaming rounds with a steady state',
    value: (r) => `${r.stream.steadyRounds} of ${r.stream.perRound.windowMs.length}`,
  },
  {
    label: 'process CPU ms per 1,000 chunks',
    value: (r) => r.stream.cpuMsPer1000Chunks,
    proxiesOnly: true,
  },
  {
    label: 'process RSS MB per 1,000 open streams',
    value: (r) => r.stream.rssMBPer1000Streams,
    proxiesOnly: true,
  },
];

/** The ratio of @es/proxy with continuation to the same proxy without. */
const CONTINUATION_RATIO = ['proxy', 'proxyNoContinuation', 'continuation on / off'];
const BENCH_NAMES = ['direct', 'nodePipe', 'undiciPipe', 'proxyNoContinuation', 'proxy'];
const MOCK_NAMES = [...BENCH_NAMES, 'scheduler'];

function benchTables(s, settings) {
  const names = BENCH_NAMES;
  const rows = [
    ...latencyRows,
    ...requestCpuRows,
    ...['50', '99'].map((p) => ({
      label: `added per-chunk p${p} ms, ${settings.streams} streams`,
      value: (r) => r.stream[`addedP${p}ms`],
      absolute: (r) => r.stream[`p${p}ms`],
      added: true,
      digits: 3,
    })),
    ...cpuRows,
    {
      label: `idle streams held (of ${settings.idleStreams})`,
      value: (r) => `${r.idle.held} (${r.idle.failedAll} failed)`,
    },
    { label: 'process RSS MB per 1,000 idle streams', value: (r) => r.idle.rssMBPer1000Streams },
    {
      label: 'in flight after the idle streams were dropped',
      value: (r) => String(r.idle.inFlightAfterClose),
    },
    failuresRow,
  ];
  return table(
    s,
    names,
    [CONTINUATION_RATIO, ['proxy', 'undiciPipe'], ['proxy', 'nodePipe']],
    rows,
  );
}

function mockTable(s) {
  return table(
    s,
    MOCK_NAMES,
    [
      CONTINUATION_RATIO,
      ['proxy', 'undiciPipe'],
      ['proxy', 'nodePipe'],
      ['scheduler', 'undiciPipe'],
      ['scheduler', 'proxy'],
    ],
    [...latencyRows, ...requestCpuRows, ...cpuRows, failuresRow],
  );
}

/**
 * The data plane as deployed (es-proxy with 1 and 2 processes; the deployed scheduler too
 * behind the mock engine) against nginx: CPU per request and per chunk of each serving
 * process, and every figure as a ratio to nginx.
 */
const DATA_PLANE_NAMES = ['nginx', 'dataPlane1', 'dataPlane2'];
const partsCell = (parts, digits) =>
  parts === undefined
    ? undefined
    : Object.entries(parts)
        .map(([k, v]) => `${k} ${fmt(v, digits)}`)
        .join(', ');
function dataPlaneTable(s, names, settings, withChunkLatency) {
  const present = names.filter((n) => s[n] !== undefined);
  if (!present.includes('nginx') && !present.some((n) => n.startsWith('dataPlane'))) return '';
  // Without nginx (not installed) there is nothing to divide by.
  const ratios = present.includes('nginx')
    ? present.filter((n) => n !== 'nginx').map((n) => [n, 'nginx'])
    : [];
  const rows = [
    ...latencyRows,
    ...requestCpuRows.map((r) => ({ ...r, label: `${r.label} (serving processes summed)` })),
    ...['c1', 'c64'].map((c) => ({
      label: `CPU µs per request by process, ${c === 'c1' ? 'c=1' : 'c=64'}`,
      value: (r) => partsCell(r[c].parts, 1),
      proxiesOnly: true,
    })),
    ...(withChunkLatency
      ? ['50', '99'].map((p) => ({
          label: `added per-chunk p${p} ms, ${settings.streams} streams`,
          value: (r) => r.stream[`addedP${p}ms`],
          absolute: (r) => r.stream[`p${p}ms`],
          added: true,
          digits: 3,
        }))
      : []),
    cpuRows[0],
    {
      label: 'process CPU µs per streamed chunk (serving processes summed)',
      value: (r) => r.stream.cpuMsPer1000Chunks,
      proxiesOnly: true,
    },
    {
      label: 'CPU µs per streamed chunk by process',
      value: (r) => partsCell(r.stream.parts, 2),
      proxiesOnly: true,
    },
    {
      label: 'chunks/s one process-core forwards (1e6 / µs per chunk)',
      value: (r) => 1e6 / r.stream.cpuMsPer1000Chunks,
      proxiesOnly: true,
      digits: 0,
    },
    cpuRows[2],
    failuresRow,
  ];
  return table(s, present, ratios, rows);
}

/**
 * How many data-plane processes a 16-node deployment of the seed's kind needs, on paper:
 * the assumed token rate of its GPUs, one streamed chunk per token, divided by the chunks/s
 * one es-proxy process forwards per core in this run (the costliest of the es-proxy figures
 * measured, so the estimate errs high).
 */
export const CAPACITY = {
  nodes: 16,
  gpusPerNode: 8,
  tensorParallel: 4,
  /** Default of `--tokens-per-gpu`. */
  tokensPerGpu: 2_000,
  source:
    "an assumption, not measured here: the order of magnitude of the batched decode throughput published for Llama-3-70B on 4 x H100 with vLLM (vLLM's v0.6.0 performance update, blog.vllm.ai, 2024-09-05, benchmarks that setup), taken on the high side so the estimate errs toward more processes; --tokens-per-gpu changes it",
};
function capacityParagraph(summary, tokensPerGpu = CAPACITY.tokensPerGpu) {
  const measured = [];
  for (const [section, s] of Object.entries(summary)) {
    if (s === undefined) continue;
    for (const name of ['dataPlane1', 'dataPlane2']) {
      const us = get(() => s[name].stream.cpuMsPer1000Chunks);
      if (Number.isFinite(us)) measured.push({ section, name, us });
    }
  }
  if (measured.length === 0) return [];
  const worst = measured.reduce((a, b) => (b.us > a.us ? b : a));
  const c = CAPACITY;
  const gpus = c.nodes * c.gpusPerNode;
  const tokens = gpus * tokensPerGpu;
  const perCore = 1e6 / worst.us;
  const at = (utilisation) => Math.ceil(tokens / (perCore * utilisation));
  const nginx = get(() => summary[worst.section].nginx.stream.cpuMsPer1000Chunks);
  return [
    "#### How many data-plane processes a 16-node deployment of the seed's kind needs",
    '',
    `${c.nodes} nodes x ${c.gpusPerNode} GPUs = ${gpus} GPUs, ${gpus / c.tensorParallel} replicas of a 70B-class model at TP ${c.tensorParallel}. Assumed ${tokensPerGpu.toLocaleString('en-US')} output tokens/s per GPU (${c.source}), so ${tokens.toLocaleString('en-US')} tokens/s in all; with every client streaming (vLLM sends one event per token) that is ${tokens.toLocaleString('en-US')} chunks/s through the data plane. This run's costliest es-proxy figure is ${fmt(worst.us)} µs of CPU per streamed chunk (${LABELS[worst.name]}, ${worst.section === 'bench' ? 'bench upstream' : 'mock engine'} section; of ${measured.map((m) => `${fmt(m.us)} µs`).join(', ')}), i.e. ${Math.round(perCore).toLocaleString('en-US')} chunks/s per process-core: the deployment needs ${at(1)} es-proxy processes (one core each) at 100 % of a core, ${at(0.6)} at 60 %.${Number.isFinite(nginx) ? ` nginx (one worker) spent ${fmt(nginx)} µs per chunk in the same section: ${Math.ceil(tokens / (1e6 / nginx))} nginx workers at 100 %.` : ''} Chunks are independent across processes (a request never depends on two), so the count scales with processes spread over hosts behind a load balancer; per request (non-streaming) the figures are in the tables above.`,
  ];
}

/** The heading, what was run, the table and the notes of one section's data-plane targets. */
function dataPlaneSection(raw, s, names, settings, withChunkLatency) {
  const notes = [raw.nginx?.note, raw.dataPlane?.note].filter((n) => n !== undefined);
  const tableText = dataPlaneTable(s, names, settings, withChunkLatency);
  const argv = raw.dataPlane?.argv ?? {};
  const reports = raw.dataPlane?.reports;
  return [
    '',
    `##### The data plane as deployed, against nginx (${withChunkLatency ? 'bench upstream' : 'mock engine'})`,
    '',
    `es-proxy: \`node ${argv.dataPlane1?.join(' ') ?? 'apps/proxy/dist/main.mjs'}\` (and \`--processes 2\`), fed its table by watch-server.mjs (its own process: a registry with the engine${withChunkLatency ? '' : 's'} registered ready, served by \`createRoutingWatchServer\` with the report route), continuation on (the scheduler's defaults). ${raw.nginx?.version ?? 'nginx'}: one worker, keep-alive upstream, \`proxy_buffering off\` (nginx.mjs renders the configuration). Per request and per chunk, "summed" is the CPU of the serving processes (es-proxy's workers, nginx's worker${names.includes('scheduler') ? ", the scheduler's es-proxy workers" : ''}) over the requests or chunks they all served: what one process spends on each; "by process" also shows the primary, nginx's master${names.includes('scheduler') ? ' and the scheduler process' : ''}, which the sum leaves out. Ratios are to nginx.${reports === undefined ? '' : ` The es-proxy processes' reports: ${reports.accepted} accepted, ${reports.refused} refused by the data-plane key's check.`}`,
    ...notes.flatMap((n) => ['', n]),
    ...(tableText === '' ? [] : ['', tableText]),
  ];
}

/** Per-round values of the figures that move most between rounds. */
function spreadTable(s, names, rows) {
  const lines = [
    `| figure, per round | ${names.map((n) => LABELS[n]).join(' | ')} |`,
    `|---|${names.map(() => '---').join('|')}|`,
  ];
  for (const [label, fn, digits] of rows) {
    const cells = names.map((n) => {
      const values = (get(() => fn(s[n])) ?? []).filter(Number.isFinite);
      return values.map((v) => fmt(v, digits)).join(' / ');
    });
    if (cells.some((cell) => cell !== '')) lines.push(`| ${label} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/**
 * What continuation costs, in words and this run's figures: @es/proxy (non-streaming requests
 * streamed from the engine and assembled, stream events parsed and re-serialized) against the
 * same proxy with continuation off (requests and answers relayed as they are) and the pipes.
 */
function continuationCost(s) {
  const on = s.proxy;
  const off = s.proxyNoContinuation;
  if (on === undefined || off === undefined) return [];
  const figure = (label, fn, digits, unit) => {
    const v = (r) => get(() => fn(r));
    const [a, b] = [v(on), v(off)];
    if (!Number.isFinite(a) || !Number.isFinite(b)) return undefined;
    const pipes = ['nodePipe', 'undiciPipe']
      .map((n) => [n, v(s[n])])
      .filter(([, x]) => Number.isFinite(x))
      .map(([n, x]) => `${LABELS[n]} ${fmt(x, digits)}${unit} (${fmt(a / x)} x)`)
      .join(', ');
    return `${label}: ${fmt(a, digits)}${unit} with continuation, ${fmt(b, digits)}${unit} without (on / off ${fmt(a / b)} x)${pipes === '' ? '' : `; ${pipes}`}`;
  };
  const lines = [
    [
      'Non-streaming (with continuation @es/proxy streams the request from the engine and assembles the answer)',
      [
        figure('served req/s, c=64', (r) => r.c64.rps, 0, ''),
        figure('served req/s, c=1', (r) => r.c1.rps, 0, ''),
        figure('process CPU per request, c=64', (r) => r.c64.cpuUsPerRequest, 1, ' µs'),
        figure('process CPU per request, c=1', (r) => r.c1.cpuUsPerRequest, 1, ' µs'),
      ],
    ],
    [
      'Streaming (with continuation every event is parsed and re-serialized)',
      [
        figure('process CPU per 1,000 chunks', (r) => r.stream.cpuMsPer1000Chunks, 2, ' ms'),
        figure('process RSS per 1,000 open streams', (r) => r.stream.rssMBPer1000Streams, 2, ' MB'),
        figure('process RSS per 1,000 idle streams', (r) => r.idle.rssMBPer1000Streams, 2, ' MB'),
      ],
    ],
  ]
    .map(([head, items]) => [head, items.filter((x) => x !== undefined)])
    .filter(([, items]) => items.length > 0)
    .map(([head, items]) => `- ${head}: ${items.join('; ')}.`);
  return lines.length === 0 ? [] : ['What continuation costs (medians of this run):', '', ...lines];
}

function targetChecks(s, settings) {
  const p = s.proxy;
  const checks = [
    [
      'throughput >= 0.6 x the node:http pipe (c=64)',
      get(() => p.c64.rps / s.nodePipe.c64.rps),
      (v) => v >= 0.6,
      (v) => `${fmt(v)} x (undici pipe: ${fmt(get(() => p.c64.rps / s.undiciPipe.c64.rps))} x)`,
    ],
    [
      'added p50 <= 0.3 ms at c=1',
      get(() => p.c1.addedP50),
      (v) => v <= 0.3,
      (v) => `${fmt(v, 3)} ms`,
    ],
    [
      'added per-chunk p99 <= 1 ms',
      get(() => p.stream.addedP99ms),
      (v) => v <= 1,
      (v) =>
        `${fmt(v, 3)} ms (pipes: node ${fmt(
          get(() => s.nodePipe.stream.addedP99ms),
          3,
        )}, undici ${fmt(
          get(() => s.undiciPipe.stream.addedP99ms),
          3,
        )})`,
    ],
    [
      'CPU <= 10 ms per 1,000 chunks',
      get(() => p.stream.cpuMsPer1000Chunks),
      (v) => v <= 10,
      (v) =>
        `${fmt(v)} ms (pipes: node ${fmt(get(() => s.nodePipe.stream.cpuMsPer1000Chunks))}, undici ${fmt(get(() => s.undiciPipe.stream.cpuMsPer1000Chunks))})`,
    ],
    [
      'RSS <= 40 MB per 1,000 streams',
      get(() => p.stream.rssMBPer1000Streams),
      (v) => v <= 40,
      (v) => `${fmt(v)} MB`,
    ],
    [
      '10,000 idle streams held without errors',
      get(() => p.idle.held),
      (v) => v === 10_000 && p.idle.failedAll === 0,
      (v) =>
        `${v} held${settings.idleStreams < settings.idleWanted ? ` (the fd limit ${settings.fdLimit} caps a proxy at ${settings.idleStreams})` : ''}`,
    ],
  ];
  const lines = ['| target | measured | met |', '|---|---|---|'];
  for (const [label, value, ok, show] of checks) {
    if (value === undefined || Number.isNaN(value)) continue;
    lines.push(`| ${label} | ${show(value)} | ${ok(value) ? 'yes' : '**no**'} |`);
  }
  return lines.join('\n');
}

/** Every failed check, where and of which kind, with a few examples. */
function failureLines(results) {
  const lines = [];
  const visit = (where, value) => {
    if (value === null || typeof value !== 'object') return;
    if (typeof value.failedAll === 'number') {
      if (value.failedAll > 0) {
        const kinds = Object.entries(value.failed)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${k} ${n}`)
          .join(', ');
        lines.push(
          `- ${where}: ${value.failedAll} of ${value.checked} failed (in the window: ${kinds || 'none'}); e.g. ${value.examples.join(' | ')}`,
        );
      }
      return;
    }
    for (const [key, inner] of Object.entries(value))
      visit(where === '' ? key : `${where}.${key}`, inner);
  };
  visit('bench', results.bench);
  visit('mock', results.mock);
  visit('cost', results.cost);
  visit('splice', results.splice?.scenarios);
  for (const sc of Object.values(results.splice?.scenarios ?? {}))
    for (const problem of sc.problems) lines.push(`- splice, ${problem}`);
  return lines;
}

/** Everything detected as failed in the bench section (where --plant-corrupt plants). */
function detectedInBench(results) {
  let n = 0;
  const visit = (value) => {
    if (value === null || typeof value !== 'object') return;
    if (typeof value.failedAll === 'number') n += value.failedAll;
    else for (const inner of Object.values(value)) visit(inner);
  };
  visit({
    latency: results.bench?.latency,
    stream: results.bench?.stream,
    idle: results.bench?.idle,
  });
  return n;
}

/** What keeping the generated ids costs: continuation on against off, CPU and memory. */
function costReport(raw, c) {
  if (raw === undefined || c === undefined) return [];
  const { sizes } = raw;
  const [short, long] = sizes.heldTokens;
  const ratios = (f) => f.ratios.map((r) => fmt(r)).join(', ');
  const row = (label, f, digits) =>
    `| ${label} | ${fmt(f.on, digits)} | ${fmt(f.off, digits)} | ${fmt(f.ratio)} | ${ratios(f)} |`;
  // A figure near 0 without continuation: the difference says more than a ratio.
  const differenceRow = (label, f, digits) =>
    `| ${label} | ${fmt(f.on, digits)} | ${fmt(f.off, digits)} | on - off ${fmt(f.difference, digits)} | ${f.differences.map((d) => fmt(d, digits)).join(', ')} |`;
  const goal = c.chunkCpu.ratio;
  const verdict = !Number.isFinite(goal)
    ? '**not measured** (no pair had a steady state)'
    : goal <= CHUNK_CPU_GOAL
      ? '**met**'
      : '**not met**';
  return [
    '',
    '#### What keeping the generated ids costs',
    '',
    `\`@es/proxy\` with continuation (each chat stream upstream with \`return_token_ids\`, every event parsed, the ids kept) against the same proxy with continuation off (bytes relayed), both in front of the bench upstream, in the same process tree (cost.mjs). CPU: ${c.pairsTaken} pair(s) of samples (${sizes.pairs} wanted with a steady state on both sides, up to 2 more taken when one has none), one of each target back to back (the order alternating), each ${sizes.streams} streams x ${sizes.chunks} chunks every ${sizes.intervalMs} ms (10,000 chunks/s in all as in the streaming phase, from fewer, faster streams: 1,000 can take most of a stream's life to open on a busy 2-core machine, leaving no steady state), then non-streaming requests at c=64 for ${raw.sampleMs} ms; µs of the proxy process's CPU over the measured window divided by the chunks or requests served (per chunk: the steady state with every stream open, which ${c.steadyPairs} of ${c.pairsTaken} pair(s) had, the others left out; per streamed request: the whole sample, opening and closing included). Memory: ${sizes.memoryRounds} round(s) of a fresh proxy process of each (\`--expose-gc\`), warmed up with 50 streams, then ${sizes.heldStreams} streams held open after their first ${short} tokens and ${sizes.heldStreams} more after their first ${long}, all held to the end, opened in batches of ${Math.floor(sizes.heldStreams / sizes.batches)} with a full GC and a reading of RSS and heap used after each: a batch's growth divided by its streams, the median over a length's ${sizes.batches} batches (the first may reuse memory the process had freed). Each side's figure is the median over the pairs (rounds), the on / off column the median of the per-pair (per-round) ratios, which follow it.`,
    '',
    '| figure | @es/proxy, continuation on | continuation off | on / off | on / off, each pair or round |',
    '|---|---|---|---|---|',
    row('process CPU µs per streamed chunk', c.chunkCpu, 2),
    row(`process CPU µs per streamed request (${sizes.chunks} chunks)`, c.streamCpu, 1),
    row('process CPU µs per non-streaming request (16 tokens, c=64)', c.completionCpu, 1),
    row(`RSS KB per request in flight, ${long} tokens generated`, c.rss, 1),
    row(`heap used KB per request in flight, ${long} tokens generated`, c.heap, 1),
    row(`RSS KB per request in flight, ${short} tokens generated`, c.rssShort, 1),
    row(`heap used KB per request in flight, ${short} tokens generated`, c.heapShort, 1),
    differenceRow(
      `heap bytes per generated token held (${short} to ${long} tokens)`,
      c.heapPerToken,
      1,
    ),
    '',
    `Goal: no more than ${Math.round((CHUNK_CPU_GOAL - 1) * 100)} % more CPU per streamed chunk with continuation than without: on / off ${fmt(goal)}, ${verdict}. In flight after the held streams were dropped: ${c.inFlightAfterClose}.`,
  ];
}

/** The extra time a client waits at a splice, after a crash and after a hang. */
function spliceReport(raw, sp) {
  if (raw === undefined || sp === undefined) return [];
  const s = raw.settings;
  const modes = Object.keys(sp.scenarios);
  const label = {
    reset: 'crash (the engine resets the connection)',
    hang: `hang (the engine falls silent; stall timeout ${s.stallTimeoutMs} ms)`,
  };
  const row = (name, fn) => `| ${name} | ${modes.map((m) => fn(sp.scenarios[m], m)).join(' | ')} |`;
  return [
    '',
    '#### The extra wait at a splice',
    '',
    `Two \`@es/mock-engine\` processes (splice-engine.mjs: the built library, \`ttft\` ${s.ttftMs} ms, ${s.tokensPerSecond} tokens/s) in the pool of one \`@es/proxy\` (\`node ${raw.proxyArgv.join(' ')}\`: \`continuation.stallTimeoutMs\` ${s.stallTimeoutMs} ms, the scheduler's \`stallTimeoutMs\`, default 30 000 ms; other options default; a fresh process per scenario). ${s.streams} chat streams of ${s.tokens} tokens (8 prompts in turn) started over ${s.spreadMs} ms; each engine cuts one chat stream in ${s.every} when its ${s.cutAfter + 1}th content chunk is due, so the continuation goes to the other engine. Extra wait: the gap the client saw between the last token chunk before the cut and the first after the splice, less the normal interval (the median gap of the streams not cut). Re-prefill: the median time to the first chunk of the continuation's request (\`/v1/completions\`, the prompt's and the ${s.cutAfter} generated ids as its prompt) sent straight to an engine, ${s.prefillSamples} samples. Every response checked against the engine's own answer to its prompt (\`expectedGeneration\`; an uncut answer per prompt straight from an engine confirmed first), every cut matched with the proxy's continuation record.`,
    '',
    `| figure | ${modes.map((m) => label[m] ?? m).join(' | ')} |`,
    `|---|${modes.map(() => '---').join('|')}|`,
    row(
      'streams cut by an engine / continued by the proxy / spliced responses correct',
      (x) => `${x.cuts} / ${x.splices} / ${x.correct}`,
    ),
    row('extra wait at the splice p50 ms', (x) => fmt(x.p50, 0)),
    row('extra wait at the splice p95 ms', (x) => fmt(x.p95, 0)),
    row(
      "the proxy's own wait, cut to the continuation's first event, p50 / p95 ms",
      (x) => `${fmt(x.proxyWaitP50, 0)} / ${fmt(x.proxyWaitP95, 0)}`,
    ),
    row('normal interval between chunks ms', (x) => fmt(x.normalIntervalMs, 1)),
    row('re-prefill of the continuation on the engine ms', () => fmt(sp.prefillMs, 0)),
    row(
      'goal: extra wait p95 <= ms',
      (x, m) => `${fmt(x.goalMs, 0)} (re-prefill + ${m === 'hang' ? 'stall timeout + ' : ''}1 s)`,
    ),
    row('goal met', (x) => (x.met ? 'yes' : '**no**')),
    ...modes
      .filter((m) => sp.scenarios[m].stalled)
      .flatMap((m) => [
        '',
        `${label[m]}: the normal interval between chunks was ${fmt(sp.scenarios[m].normalIntervalMs, 1)} ms, not the engine's ${fmt(sp.intervalMs, 0)} ms: the machine stalled during this scenario, and its waits measure the machine more than the proxy.`,
      ]),
  ];
}

const minutes = (s) => `${Math.floor(s / 60)} min ${s % 60} s`;

/** The report as markdown, and the exit code the run deserves. */
export function render(results) {
  const { provenance: p, settings } = results;
  const summary = summarize(results);
  const out = [];
  out.push(
    `Generated by \`${p.command}\` in one run; do not edit (raw figures: [results.json](results.json)).`,
    '',
    `- commit \`${p.commit}\`${p.dirtyFiles.length > 0 ? ` (${p.dirtyFiles.length} tracked file(s) modified in the checkout: ${p.dirtyFiles.join(', ')})` : ''}`,
    `- ${p.started} to ${p.finished} (${minutes(p.seconds)}), load average (1, 5, 15 min) ${p.loadavgStart.join(' ')} at the start, ${p.loadavgEnd.join(' ')} at the end`,
    `- ${p.cpu}, Node ${p.node}, fd limit ${settings.fdLimit}`,
    `- measured builds: ${p.dists.join('; ')}`,
    `- ${settings.rounds} round(s); non-streaming samples ${settings.sampleMs} ms after ${settings.settleMs} ms unmeasured (warm-up ${settings.warmupMs} ms per target first); ${settings.streams} streams x ${settings.chunks} chunks every ${settings.intervalMs} ms; ${settings.idleStreams} idle streams held ${settings.holdMs} ms. Figures are medians over rounds (RSS per open stream: the largest steady round, less the RSS before streaming), ratios are of those medians.`,
  );
  const s = summary.bench;
  if (s !== undefined) {
    out.push(
      '',
      '#### Bench upstream (upstream.mjs)',
      '',
      benchTables(s, settings),
      '',
      spreadTable(s, BENCH_NAMES, [
        ['served req/s, c=64', (r) => r.c64.perRound, 0],
        ['process CPU µs per request, c=64', (r) => r.c64.perRoundCpu, 1],
        ['streaming steady-state window ms', (r) => r.stream.perRound.windowMs, 0],
        ['per-chunk p99 ms (not added)', (r) => r.stream.perRound.p99ms, 3],
        ['process CPU ms per 1,000 chunks', (r) => r.stream.perRound.cpuMsPer1000Chunks, 2],
      ]),
      '',
      ...continuationCost(s),
      '',
      targetChecks(s, settings),
      ...dataPlaneSection(results.bench, s, DATA_PLANE_NAMES, settings, true),
    );
  }
  const m = summary.mock;
  if (m !== undefined) {
    const args = results.mock.engineArgs;
    out.push(
      '',
      '#### @es/mock-engine, started by the deployed scheduler',
      '',
      `Scheduler: \`node ${results.mock.scheduler.argv.join(' ')}\`; engines \`${args['bench-fast'].join(' ')}\` (non-streaming) and \`${args['bench-stream'].join(' ')}\` (${results.mock.stream?.streams ?? 0} streams of ${settings.chunks} tokens). Scheduler CPU and RSS are those of the es-proxy workers it started (its data-plane.json), which serve /v1; the scheduler process itself and the es-proxy primary are shown by process in the data-plane table below (not its workers' or engines').`,
      '',
      mockTable(m),
      '',
      spreadTable(m, MOCK_NAMES, [
        ['served req/s, c=64', (r) => r.c64.perRound, 0],
        ['process CPU µs per request, c=64', (r) => r.c64.perRoundCpu, 1],
        ['streaming steady-state window ms', (r) => r.stream.perRound.windowMs, 0],
        ['process CPU ms per 1,000 chunks', (r) => r.stream.perRound.cpuMsPer1000Chunks, 2],
      ]),
      '',
      ...continuationCost(m),
      '',
      `The scheduler's \`es_requests_total\` (its /metrics) counted ${results.mock.scheduler.requestsCounted} requests; the load generator sent it ${sum([m.scheduler?.checked, m.scheduler?.stream?.checked])}.`,
      ...dataPlaneSection(results.mock, m, [...DATA_PLANE_NAMES, 'scheduler'], settings, false),
    );
  } else if (results.mockNote !== undefined) {
    out.push('', results.mockNote);
  }
  out.push(...costReport(results.cost, summary.cost));
  out.push(...spliceReport(results.splice, summary.splice));
  const capacity = capacityParagraph(summary, settings.tokensPerGpu);
  if (capacity.length > 0) out.push('', ...capacity);
  const failures = failureLines(results);
  out.push(
    '',
    failures.length === 0 ? 'Every response checked was complete and correct.' : 'Failures:',
    ...failures,
  );
  let exitCode = failures.length === 0 ? 0 : 1;
  if (settings.plantCorrupt) {
    const verdicts = [];
    if (results.bench !== undefined) {
      const planted = results.bench.planted ?? { completions: 0, streams: 0 };
      const total = planted.completions + planted.streams;
      const detected = detectedInBench(results);
      const ok = total > 0 && detected === total;
      verdicts.push(ok);
      out.push(
        '',
        `--plant-corrupt: the upstream altered ${planted.completions} completion(s) and ${planted.streams} stream(s); the checks reported ${detected} failure(s): ${ok ? 'every planted defect was caught, nothing else failed' : 'MISMATCH'}`,
      );
    }
    for (const [mode, sc] of Object.entries(results.splice?.scenarios ?? {})) {
      // The judge reports a planted wrong splice that passed and any other failure.
      const ok = sc.planted > 0 && sc.problems.length === 0 && sc.tally.failedAll === sc.planted;
      verdicts.push(ok);
      out.push(
        '',
        `--plant-corrupt, splice (${mode}): the engines altered the first token of ${sc.planted} continuation(s); the checks reported ${sc.tally.failedAll} failed response(s): ${ok ? 'every wrong splice was caught, nothing else failed' : 'MISMATCH'}`,
      );
    }
    exitCode = verdicts.length > 0 && verdicts.every(Boolean) ? 0 : 1;
  }
  return { text: out.join('\n'), summary, exitCode };
}

/** Rewrite README.md between the markers and write results.json, from the same run. */
export async function writeOutputs(results, report) {
  const readme = readFileSync(README, 'utf8');
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md lacks the ${START} ... ${END} markers`);
  writeFileSync(
    README,
    `${readme.slice(0, start + START.length)}\n\n${report.text}\n\n${readme.slice(end)}`,
  );
  // Formatted as the repository's `prettier --check .` expects.
  const prettier = await import('prettier');
  const json = JSON.stringify({ ...results, summary: report.summary });
  const options = { ...(await prettier.resolveConfig(RESULTS)), filepath: RESULTS };
  writeFileSync(RESULTS, await prettier.format(json, options));
}
