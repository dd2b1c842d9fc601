/* global process, console, fetch, performance, URL */
// Heartbeat benchmark: N simulated workers (real HTTP registrations, then one heartbeat a
// second each, spread over the second, as independent nodes would send them) against the
// deployed scheduler of this checkout and, with --baseline, of another checkout, alternately
// in the same process tree; prints latency and scheduler CPU per heartbeat, and the ratios.
//
//   pnpm build && node bench/heartbeats/run.mjs [--baseline /path/to/other/checkout]
//       [--workers 1024] [--seconds 15] [--rounds 2]
//
// The other checkout must be built too (`pnpm build` there). Traffic goes to 127.0.0.1 only.
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    baseline: { type: 'string' },
    workers: { type: 'string', default: '1024' },
    seconds: { type: 'string', default: '15' },
    rounds: { type: 'string', default: '2' },
  },
});
const here = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const workers = Number(args.workers);
const seconds = Number(args.seconds);
const rounds = Number(args.rounds);

/** The module of a checkout with `deriveKeys`: @es/protocol's, or @es/pool's before it existed. */
async function keysOf(root) {
  for (const dist of ['packages/protocol/dist/index.mjs', 'packages/pool/dist/index.mjs']) {
    try {
      const module = await import(join(root, dist));
      if (typeof module.deriveKeys === 'function') return module;
    } catch {
      // not in this checkout
    }
  }
  throw new Error(`${root}: no built deriveKeys (run pnpm build there)`);
}

/** utime + stime of a process, in ms (Linux /proc). */
function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
}

const percentile = (sorted, p) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

async function measure(root) {
  const protocol = await keysOf(root);
  const dir = mkdtempSync(join(tmpdir(), 'es-bench-hb-'));
  const logFile = join(dir, 'scheduler.log');
  const out = openSync(logFile, 'a');
  const argv = [
    ...['--model', 'mock-model', '--engine', 'mock', '--backend', 'local'],
    ...['--local-nodes', '1', '--max-nodes', '1', '--gpus-per-node', '1'],
    ...['--host', '127.0.0.1', '--port', '0', '--log-dir', join(dir, 'logs')],
  ];
  const child = spawn(process.execPath, [join(root, 'apps/scheduler/dist/cli.mjs'), ...argv], {
    stdio: ['ignore', out, out],
  });
  try {
    let url;
    for (let i = 0; i < 300 && url === undefined; i++) {
      await sleep(100);
      url = /"url":"(http:[^"]+)"/.exec(readFileSync(logFile, 'utf8'))?.[1];
    }
    if (url === undefined) throw new Error(`${root}: the scheduler did not start (${logFile})`);
    await sleep(3_000); // its own worker registers; start-up work settles
    const keys = protocol.deriveKeys(readFileSync(join(dir, 'logs', 'secret'), 'utf8'));
    // The worker listener (its own thread, since issue 15), else the client port of older
    // checkouts: where the scheduler tells its workers to report.
    const workerUrl = /"workersReachUs":"(http:[^"]+)"/.exec(readFileSync(logFile, 'utf8'))?.[1];
    const base = `${workerUrl ?? url}/api/v1/workers`;
    // Signed requests (workerKey), or the bearer token of checkouts from before signing.
    const post = (route, body) => {
      const text = JSON.stringify(body);
      const path = new URL(`${base}${route}`).pathname;
      const auth =
        keys.workerKey === undefined
          ? { authorization: `Bearer ${keys.workerToken}` }
          : protocol.signWorkerRequest(keys.workerKey, {
              method: 'POST',
              path,
              body: text,
              // For the port it is sent to, as a worker signs (ignored by older checkouts).
              audience: new URL(base).port,
            });
      return fetch(`${base}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: text,
      });
    };
    const ids = [];
    for (let i = 0; i < workers; i++) {
      const response = await post('/register', {
        ...{ deployment: 'mock-model', jobId: String(9_000_000 + i), restartCount: 0 },
        ...{ index: 0, host: '127.0.0.1', port: 9, gpus: [0], engine: 'mock' },
        ...{ model: 'mock-model', node: `sim${i}`, state: 'loading' },
      });
      if (!response.ok) throw new Error(`register answered ${response.status}`);
      ids.push((await response.json()).workerId);
    }
    const latencies = [];
    let failed = 0;
    let stopped = false;
    const cpuBefore = cpuMs(child.pid);
    const started = performance.now();
    const loops = ids.map(async (id, i) => {
      await sleep((i / ids.length) * 1_000);
      while (!stopped) {
        const next = performance.now() + 1_000;
        const t = performance.now();
        const response = await post(`/${id}/heartbeat`, { state: 'loading', restartCount: 0 });
        await response.body?.cancel();
        if (response.status === 200) latencies.push(performance.now() - t);
        else failed++;
        await sleep(Math.max(0, next - performance.now()));
      }
    });
    await sleep(seconds * 1_000);
    stopped = true;
    await Promise.all(loops);
    const cpu = cpuMs(child.pid) - cpuBefore;
    const elapsed = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    return {
      heartbeats: latencies.length,
      failed,
      perSecond: latencies.length / elapsed,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      cpuUsPerHeartbeat: (cpu * 1000) / Math.max(1, latencies.length),
    };
  } finally {
    child.kill('SIGTERM');
    await Promise.race([new Promise((r) => child.once('exit', r)), sleep(15_000)]);
    rmSync(dir, { recursive: true, force: true });
  }
}

const targets = [['this checkout', here]];
if (args.baseline) targets.push(['baseline', resolve(args.baseline)]);
const commit = (root) => {
  try {
    return execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD']).toString().trim();
  } catch {
    return '?';
  }
};
const results = new Map(targets.map(([name]) => [name, []]));
for (let round = 1; round <= rounds; round++) {
  for (const [name, root] of round % 2 === 1 ? targets : [...targets].reverse()) {
    console.error(`round ${round}/${rounds}: ${name} (${root})`);
    results.get(name).push(await measure(root));
  }
}
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
};
const figures = [
  ['heartbeats answered per second', 'perSecond', 0],
  ['latency p50 ms', 'p50', 2],
  ['latency p99 ms', 'p99', 1],
  ['scheduler CPU µs per heartbeat', 'cpuUsPerHeartbeat', 0],
];
console.log(
  `Generated by \`node bench/heartbeats/run.mjs${args.baseline ? ` --baseline ${args.baseline}` : ''} --workers ${workers} --seconds ${seconds} --rounds ${rounds}\`; load average at the end ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}.\n`,
);
console.log(
  `| figure (median of ${rounds} rounds) | ${targets.map(([n, r]) => `${n} (${commit(r)})`).join(' | ')}${targets.length > 1 ? ' | this / baseline' : ''} |`,
);
console.log(`|---|${targets.map(() => '---|').join('')}${targets.length > 1 ? '---|' : ''}`);
for (const [label, key, digits] of figures) {
  const values = targets.map(([name]) => median(results.get(name).map((r) => r[key])));
  const ratio = values.length > 1 ? ` | ${(values[0] / values[1]).toFixed(2)}` : '';
  console.log(`| ${label} | ${values.map((v) => v.toFixed(digits)).join(' | ')}${ratio} |`);
}
const failed = [...results.values()].flat().reduce((sum, r) => sum + r.failed, 0);
console.log(`\nheartbeats not answered 200: ${failed}`);
process.exitCode = failed > 0 ? 1 : 0;
