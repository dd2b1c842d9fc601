/* global process, setTimeout, fetch, URL */
// The processes the benchmark measures, each its own Node process so CPU and RSS are per
// process: the servers in this folder (forked, with IPC for stats) and the deployed
// scheduler (apps/scheduler/dist/cli.mjs, with its local workers and mock engines).
import { execFileSync, fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = (file) => fileURLToPath(new URL(file, import.meta.url));
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Fork one of this folder's servers; resolves once it listens. */
export function startChild(file, argv = [], execArgv = []) {
  const child = fork(here(file), argv, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv,
  });
  return new Promise((resolve, reject) => {
    child.once('message', (m) =>
      resolve({ child, port: m.port, url: `http://127.0.0.1:${m.port}` }),
    );
    child.once('exit', (code) => reject(new Error(`${file} exited with ${code}`)));
  });
}

/** Each child's last exchange: the next message waits for its answer. */
const exchanges = new WeakMap();

/**
 * Send one message to a forked server (see ipc.mjs) and resolve to its answer. Messages to
 * one child go one at a time, so that an answer always resolves its own request (answers
 * carry no request id, and two in flight would both take the first).
 */
export function childMessage(child, message) {
  const answered = (exchanges.get(child) ?? Promise.resolve()).then(
    () =>
      new Promise((resolve) => {
        child.once('message', resolve);
        child.send(message);
      }),
  );
  exchanges.set(child, answered);
  return answered;
}

/** CPU (µs), RSS and heap used (bytes) and the server's own counters, over IPC. */
export const childStats = (child) => childMessage(child, 'stats');

/**
 * Spawn a server the benchmark owns (not one of this folder's forked children): SIGTERMed if
 * this process exits first. `stop()` SIGTERMs it, waits for its exit up to `graceMs`, then
 * removes `dir` (its temporary directory).
 */
export function spawnOwned(command, argv, { stdio, dir, graceMs = 15_000 }) {
  const child = spawn(command, argv, { stdio });
  const owned = { child, exited: false };
  child.once('exit', () => (owned.exited = true));
  const orphan = () => child.kill('SIGTERM');
  process.once('exit', orphan);
  owned.stop = async () => {
    process.off('exit', orphan);
    if (!owned.exited) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((resolve) => child.once('exit', resolve)), sleep(graceMs)]);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return owned;
}

let clockTicks;
/** CPU (µs) and RSS (bytes) of any process, from /proc (10 ms CPU resolution). */
export function procStats(pid) {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5), counted from field 3 here.
  const ticks = (i) => (Number(fields[i - 3]) * 1e6) / clockTicks;
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  return { cpu: { user: ticks(14), system: ticks(15) }, rss: rssKb * 1024 };
}

const PROTOCOL_DIST = here('../../packages/protocol/dist/index.mjs');
export const SCHEDULER_CLI = here('../../apps/scheduler/dist/cli.mjs');
export const ES_PROXY = here('../../apps/proxy/dist/main.mjs');

const cpuOf = (s) => s.cpu.user + s.cpu.system;

/**
 * The serving processes of an es-proxy (its workers, read from its state file each time, so a
 * respawned worker is followed): their CPU and RSS summed (each request and chunk is served
 * by one worker, so the sum per request or chunk is what one process spends on it), and in
 * `parts` the CPU (µs) of each worker, of the primary and of any `others` ({ name: pid }),
 * which the sum leaves out.
 */
export function dataPlaneStats(stateFile, others = {}) {
  const state = JSON.parse(readFileSync(stateFile, 'utf8'));
  const workers = state.workers.map((pid) => procStats(pid));
  const parts = Object.fromEntries(workers.map((w, i) => [`worker ${i + 1}`, cpuOf(w)]));
  parts.primary = cpuOf(procStats(state.pid));
  for (const [name, pid] of Object.entries(others)) parts[name] = cpuOf(procStats(pid));
  return {
    cpu: {
      user: workers.reduce((n, w) => n + w.cpu.user, 0),
      system: workers.reduce((n, w) => n + w.cpu.system, 0),
    },
    rss: workers.reduce((n, w) => n + w.rss, 0),
    parts,
  };
}

/**
 * `es-proxy --processes N` as deployed (apps/proxy/dist/main.mjs), following the watch server
 * at `watchUrl` through a scheduler-URL file, with `secretFile` (the secret the watch server
 * signs with). Resolves once its state file is written (every worker listens) and /v1/models
 * answers from its table.
 */
export async function startEsProxy({ watchUrl, secretFile, processes }) {
  const dir = mkdtempSync(join(tmpdir(), 'es-bench-dp-'));
  const urlFile = join(dir, 'control-url');
  const stateFile = join(dir, 'data-plane.json');
  const { writeSchedulerUrl } = await import(PROTOCOL_DIST);
  writeSchedulerUrl(urlFile, watchUrl);
  const argv = [
    '--secret-file',
    secretFile,
    '--scheduler-url-file',
    urlFile,
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--processes',
    String(processes),
    '--state-file',
    stateFile,
  ];
  const logFile = join(dir, 'es-proxy.log');
  const out = openSync(logFile, 'a');
  const owned = spawnOwned(process.execPath, [ES_PROXY, ...argv], {
    stdio: ['ignore', out, out],
    dir,
  });
  const { child, stop } = owned;
  try {
    const state = await until(`es-proxy --processes ${processes} to listen`, 30_000, () => {
      if (owned.exited)
        throw new Error(`es-proxy exited:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
      return existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, 'utf8')) : undefined;
    });
    const url = `http://127.0.0.1:${state.port}`;
    // Every worker has its own subscription: ask each a few times (accepts are spread).
    await until('es-proxy to have its routing table', 30_000, async () => {
      for (let i = 0; i < 4 * processes; i++) {
        const res = await fetch(`${url}/v1/models`, { headers: { connection: 'close' } });
        const body = await res.json().catch(() => ({}));
        if (res.status !== 200 || !(body.data?.length > 0)) return undefined;
      }
      return true;
    });
    return {
      child,
      url,
      stats: async () => dataPlaneStats(stateFile),
      argv: [
        'apps/proxy/dist/main.mjs',
        ...argv.map((a) => (a === secretFile ? '<secret file>' : a.replace(dir, '<tmp>'))),
      ],
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function until(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/**
 * Start the deployed scheduler as an operator would (`--backend local --engine mock`, client
 * auth, its JSON log to a file, metrics and admin mounted as always) with one deployment per
 * entry of `deployments` ({ model, engineArgs }), each on one simulated node running one mock
 * engine. Resolves once every deployment has a ready worker, with the engines' URLs and the
 * engine API key (derived from the scheduler's secret, as the proxy derives it), so the other
 * targets can be put in front of the very same engine processes.
 */
export async function startScheduler({ deployments, apiKey, adminKey }) {
  const dir = mkdtempSync(join(tmpdir(), 'es-bench-proxy-'));
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      deployments: deployments.map((d) => ({
        name: d.model,
        model: d.model,
        engine: 'mock',
        maxNodes: 1,
        gpusPerNode: 1,
        tensorParallelSize: 1,
        engineExtraArgs: d.engineArgs.join(' '),
      })),
    }),
  );
  const argv = [
    '--config',
    config,
    '--backend',
    'local',
    '--local-nodes',
    String(deployments.length),
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--api-key',
    apiKey,
    '--admin-key',
    adminKey,
    '--log-dir',
    join(dir, 'logs'),
  ];
  const logFile = join(dir, 'scheduler.log');
  const out = openSync(logFile, 'a');
  // A crashed load generator must not leave a scheduler (and its engines) behind.
  const owned = spawnOwned(process.execPath, [SCHEDULER_CLI, ...argv], {
    stdio: ['ignore', out, out],
    dir,
  });
  const { child, stop } = owned;
  try {
    const url = await until('the scheduler to listen', 30_000, () => {
      if (owned.exited)
        throw new Error(`the scheduler exited:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
      return /"url":"(http:[^"]+)"/.exec(readFileSync(logFile, 'utf8'))?.[1];
    });
    const engines = await until('a ready worker per deployment', 60_000, async () => {
      // Engine addresses are shown only with the admin key.
      const status = await (
        await fetch(`${url}/cluster_status`, { headers: { authorization: `Bearer ${adminKey}` } })
      ).json();
      const ready = new Map(
        status.workers.filter((w) => w.status === 'READY').map((w) => [w.model_name, w]),
      );
      if (!deployments.every((d) => ready.has(d.model))) return undefined;
      return Object.fromEntries(deployments.map((d) => [d.model, ready.get(d.model)]));
    });
    // Each engine sits behind its worker's front, which takes its own job's key.
    const { deriveEngineKey } = await import(PROTOCOL_DIST);
    const secret = readFileSync(join(dir, 'logs', 'secret'), 'utf8');
    const engineUrls = Object.fromEntries(
      Object.entries(engines).map(([model, w]) => [model, w.base_url.replace(/\/v1$/, '')]),
    );
    const jobIds = Object.fromEntries(
      Object.entries(engines).map(([model, w]) => [model, String(w.slurm_job_id)]),
    );
    const engineKeys = Object.fromEntries(
      Object.entries(engines).map(([model, w]) => [
        model,
        deriveEngineKey(secret, String(w.slurm_job_id)),
      ]),
    );
    // What the scheduler's own metrics say it proxied (es_requests_total, all series).
    const requestsCounted = async () => {
      const res = await fetch(`${url}/metrics`, {
        headers: { authorization: `Bearer ${adminKey}` },
      });
      let total = 0;
      for (const line of (await res.text()).split('\n')) {
        if (line.startsWith('es_requests_total{'))
          total += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return total;
    };
    const shown = [
      'apps/scheduler/dist/cli.mjs',
      ...argv.map((a) => (a === apiKey || a === adminKey ? '<random>' : a.replace(dir, '<tmp>'))),
    ];
    // Since issue 17 the scheduler's own process does not serve /v1: the es-proxy processes
    // of its data-plane.json do (with --proxy-processes 0 there is none, and it serves).
    const stateFile = join(dir, 'logs', 'data-plane.json');
    const stats = async () =>
      existsSync(stateFile)
        ? dataPlaneStats(stateFile, { scheduler: child.pid })
        : { ...procStats(child.pid), parts: {} };
    return {
      child,
      url,
      engines: engineUrls,
      engineKeys,
      jobIds,
      secretFile: join(dir, 'logs', 'secret'),
      stats,
      argv: shown,
      requestsCounted,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Node arguments for proxy processes: BENCH_PROXY_NODE_ARGS, e.g. "--cpu-prof" to profile them. */
export function proxyNodeArgs() {
  return (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(' ').filter(Boolean);
}
