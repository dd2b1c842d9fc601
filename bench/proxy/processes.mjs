/* global process, setTimeout, fetch, URL */
// The processes the benchmark measures, each its own Node process so CPU and RSS are per
// process: the servers in this folder (forked, with IPC for stats) and the deployed
// scheduler (apps/scheduler/dist/cli.mjs, with its local workers and mock engines).
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/** CPU (µs), RSS (bytes) and the server's own counters, over IPC. */
export function childStats(child) {
  return new Promise((resolve) => {
    child.once('message', resolve);
    child.send('stats');
  });
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
  const child = spawn(process.execPath, [SCHEDULER_CLI, ...argv], { stdio: ['ignore', out, out] });
  let exited = false;
  child.once('exit', () => (exited = true));
  // A crashed load generator must not leave a scheduler (and its engines) behind.
  const orphan = () => child.kill('SIGTERM');
  process.once('exit', orphan);
  const stop = async () => {
    process.off('exit', orphan);
    if (!exited) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((resolve) => child.once('exit', resolve)), sleep(15_000)]);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const url = await until('the scheduler to listen', 30_000, () => {
      if (exited)
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
    return {
      child,
      url,
      engines: engineUrls,
      engineKeys,
      argv: shown,
      requestsCounted,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
