/**
 * Standalone data plane (issue 17): two `es-proxy` processes started by hand, outside the
 * scheduler, the way they run on login nodes when the scheduler is a SLURM job, and one
 * scheduler; all built binaries, talked to with the official openai client on 127.0.0.1.
 *
 * The local backend with the mock engine stands in for SLURM here: what is tested is the
 * data plane (the watch stream, the reports, the drain, a SIGKILL of a whole es-proxy), and
 * none of it depends on how the workers were started. The scheduler runs with
 * `--proxy-processes 0`, so the only es-proxy processes are the two this test starts; they
 * follow it through `<log dir>/control-url` with its secret file.
 *
 * Shown: both serve the same workers (the worker ids in the answers' headers, and every
 * process of both in the scheduler's data-plane list with the scheduler's table version); a
 * worker drained through the scheduler's admin API leaves both tables within a second (no
 * request through either is answered by it once a second has passed); a SIGKILL of one
 * es-proxy's whole process group costs the other nothing (0 failed requests of a steady
 * stream through it); and nginx with examples/data-plane/nginx.conf in front of two
 * es-proxy processes keeps answering while one of them is SIGKILLed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '@es/protocol';
// apps/scheduler does not depend on @es/client (the `es` CLI); its tests run its code.
import { runCli, type DataPlaneView } from '../../../packages/client/src/index.js';
import {
  FAST_FLAGS,
  freePort,
  killStartedSchedulers,
  startSchedulerProcess,
  waitFor,
  type SchedulerProcess,
} from './harness.js';
import { processAlive } from '../../../packages/testkit/src/index.js';

/** The built es-proxy (`pnpm build` first). */
const PROXY_CLI = fileURLToPath(new URL('../../proxy/dist/main.mjs', import.meta.url));
const NGINX_CONF = fileURLToPath(
  new URL('../../../examples/data-plane/nginx.conf', import.meta.url),
);
const NGINX = process.env.NGINX_PATH ?? '/usr/sbin/nginx';

const dir = mkdtempSync(join(tmpdir(), 'es-standalone-dp-'));
const logDir = join(dir, 'logs');

// One local job of 2 mock engines (2 GPUs, TP 1): two workers.
const ARGS = [
  ...['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'],
  ...['--local-nodes', '2', '--max-nodes', '1', '--gpus-per-node', '2'],
  ...['--tensor-parallel-size', '1', '--proxy-processes', '0'],
  ...['--scheduler-id', 'e2e-standalone-dp'],
  ...FAST_FLAGS,
];

interface EsProxy {
  id: string;
  port: number;
  child: ChildProcess;
  stateFile: string;
  stderr: () => string;
  exited: Promise<unknown>;
}

const proxies: EsProxy[] = [];

/** `es-proxy --processes 2` on `port`, in its own process group, as an operator starts it. */
function startEsProxy(id: string, port: number): EsProxy {
  const stateFile = join(dir, `${id}.json`);
  const child = spawn(
    process.execPath,
    [
      PROXY_CLI,
      ...['--secret-file', join(logDir, 'secret')],
      ...['--scheduler-url-file', join(logDir, 'control-url')],
      ...['--host', '127.0.0.1', '--port', String(port), '--processes', '2'],
      ...['--id', id, '--state-file', stateFile],
    ],
    { detached: true, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const proxy = { id, port, child, stateFile, stderr: () => stderr, exited };
  proxies.push(proxy);
  return proxy;
}

function statePids(proxy: EsProxy): number[] {
  try {
    const state = JSON.parse(readFileSync(proxy.stateFile, 'utf8')) as {
      pid: number;
      workers: number[];
    };
    return [state.pid, ...state.workers];
  } catch {
    return [];
  }
}

/** SIGKILL of the supervisor's whole process group: the supervisor and its workers at once. */
async function killGroup(proxy: EsProxy): Promise<number[]> {
  const pids = statePids(proxy);
  process.kill(-proxy.child.pid!, 'SIGKILL');
  await proxy.exited;
  return pids;
}

let scheduler: SchedulerProcess;

const adminHeaders = () => ({
  authorization: `Bearer ${deriveKeys(readFileSync(join(logDir, 'secret'), 'utf8')).adminToken}`,
});

const dataPlane = () => scheduler.get<DataPlaneView>('/api/v1/admin/data-plane');

/** Every process of `ids` (`<id>.0`, `<id>.1`) reports, subscribed, the scheduler's table. */
async function reportingCurrentTable(ids: string[]): Promise<DataPlaneView> {
  return waitFor(
    `the processes of ${ids.join(', ')} reporting the scheduler's table`,
    dataPlane,
    (view) =>
      ids
        .flatMap((id) => [`${id}.0`, `${id}.1`])
        .every((id) =>
          view.processes.some(
            (p) =>
              p.id === id &&
              p.state === 'serving' &&
              p.subscribed &&
              p.tableVersion === view.tableVersion,
          ),
        ),
    15_000,
  );
}

interface Outcome {
  start: number;
  end: number;
  worker: string;
  error?: string;
}

/**
 * A steady stream of chat requests through `baseUrl` (`concurrency` at a time, each on the
 * official client) until `stop` is called; every outcome with its start time and the worker
 * that answered (`x-elastic-selected-worker-id`).
 */
function steadyLoad(baseUrl: string, concurrency = 3) {
  const client = new OpenAI({
    baseURL: `${baseUrl}/v1`,
    apiKey: 'unused',
    maxRetries: 0,
    timeout: 15_000,
  });
  const outcomes: Outcome[] = [];
  let running = true;
  const loop = async () => {
    while (running) {
      const start = performance.now();
      try {
        const { data, response } = await client.chat.completions
          .create({
            model: 'mock-model',
            messages: [{ role: 'user', content: 'hello' }],
            max_tokens: 3,
          })
          .withResponse();
        if ((data.choices[0]?.message.content ?? '') === '') throw new Error('empty answer');
        outcomes.push({
          start,
          end: performance.now(),
          worker: response.headers.get('x-elastic-selected-worker-id') ?? '',
        });
      } catch (error) {
        outcomes.push({ start, end: performance.now(), worker: '', error: String(error) });
      }
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  return {
    outcomes,
    async stop(): Promise<Outcome[]> {
      running = false;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const failures = (outcomes: Outcome[]) => outcomes.filter((o) => o.error !== undefined);

async function healthy(port: number): Promise<boolean> {
  const response = await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined);
  return response?.status === 200;
}

let a: EsProxy;
let b: EsProxy;
let workerIds: string[];

beforeAll(async () => {
  if (!existsSync(PROXY_CLI)) throw new Error(`build es-proxy first (${PROXY_CLI}): pnpm build`);
  scheduler = await startSchedulerProcess({ args: ARGS, logDir });
  workerIds = await waitFor(
    '2 ready workers',
    () => scheduler.readyWorkerIds(),
    (ids) => ids.length === 2,
    60_000,
  );
  a = startEsProxy('proxy-a', await freePort());
  b = startEsProxy('proxy-b', await freePort());
  await reportingCurrentTable([a.id, b.id]);
}, 120_000);

afterAll(async () => {
  // es-proxy is not the scheduler's child: end whatever of it a failure left.
  for (const proxy of proxies) {
    for (const pid of [proxy.child.pid!, ...statePids(proxy)]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  }
  await killStartedSchedulers();
  rmSync(dir, { recursive: true, force: true });
});

describe('two standalone es-proxy processes and one scheduler', () => {
  it('serve the same workers, and es status lists every process with its table version', async () => {
    for (const proxy of [a, b]) {
      const load = steadyLoad(`http://127.0.0.1:${proxy.port}`);
      await sleep(1_000);
      const outcomes = await load.stop();
      expect(failures(outcomes)).toEqual([]);
      expect({
        proxy: proxy.id,
        workers: [...new Set(outcomes.map((o) => o.worker))].sort(),
      }).toEqual({ proxy: proxy.id, workers: workerIds });
    }
    const view = await reportingCurrentTable([a.id, b.id]);
    expect(view.processes.map((p) => p.listen)).toEqual(
      expect.arrayContaining([`http://127.0.0.1:${a.port}`, `http://127.0.0.1:${b.port}`]),
    );

    let out = '';
    const code = await runCli(['status'], {
      stdout: (t) => (out += t),
      stderr: (t) => (out += t),
      env: {
        ES_SCHEDULER_URL: scheduler.url,
        ES_ADMIN_KEY: adminHeaders().authorization.slice('Bearer '.length),
      },
    });
    expect({ code, out }).toMatchObject({ code: 0 });
    for (const id of ['proxy-a.0', 'proxy-a.1', 'proxy-b.0', 'proxy-b.1']) {
      expect(out).toMatch(
        new RegExp(`${id.replace('.', '\\.')} .* ${view.tableVersion}/${view.tableVersion} `),
      );
    }
  }, 60_000);

  it('a worker drained through the scheduler leaves both tables within a second', async () => {
    const loads = [a, b].map((proxy) => ({
      proxy,
      load: steadyLoad(`http://127.0.0.1:${proxy.port}`),
    }));
    await sleep(1_000);
    const [drained] = workerIds as [string];
    const drainedAt = performance.now();
    const response = await fetch(`${scheduler.url}/api/v1/admin/workers/${drained}/drain`, {
      method: 'POST',
      headers: { ...adminHeaders(), 'content-type': 'application/json' },
      body: '{}',
    });
    expect(response.status).toBe(200);
    // Long enough after the drain that a table still holding the worker shows it.
    await sleep(2_500);
    for (const { proxy, load } of loads) {
      const outcomes = await load.stop();
      expect(failures(outcomes)).toEqual([]);
      // It was sending requests to the drained worker before the drain ...
      expect(outcomes.some((o) => o.worker === drained && o.start < drainedAt)).toBe(true);
      // ... and stopped within a second of it (the last request it sent there, started after
      // the drain began; 0 when none was).
      const lastSent = Math.max(
        drainedAt,
        ...outcomes.filter((o) => o.worker === drained).map((o) => o.start),
      );
      const afterMs = Math.round(lastSent - drainedAt);
      console.log(`${proxy.id}: last request to the drained worker ${afterMs} ms after the drain`);
      expect(
        afterMs,
        `${proxy.id}: ms from the drain to its last request to the worker`,
      ).toBeLessThan(1_000);
      expect(outcomes.filter((o) => o.start > drainedAt + 1_000).length).toBeGreaterThan(10);
    }
    // Every process reports the table without it, and says so on /health.
    await reportingCurrentTable([a.id, b.id]);
    for (const proxy of [a, b]) {
      for (let i = 0; i < 4; i++) {
        const health = (await (await fetch(`http://127.0.0.1:${proxy.port}/health`)).json()) as {
          ready_workers: number;
        };
        expect(health.ready_workers).toBe(1);
      }
    }
  }, 60_000);

  it('a SIGKILL of one es-proxy (its whole process group) goes unnoticed through the other', async () => {
    const load = steadyLoad(`http://127.0.0.1:${b.port}`);
    await sleep(1_000);
    const killedAt = performance.now();
    const killed = await killGroup(a);
    expect(killed).toHaveLength(3);
    await sleep(2_000);
    const outcomes = await load.stop();
    expect(failures(outcomes)).toEqual([]);
    expect(outcomes.filter((o) => o.start > killedAt).length).toBeGreaterThan(10);
    await waitFor(
      'the killed processes gone',
      async () => killed.filter(processAlive),
      (alive) => alive.length === 0,
      5_000,
    );
    // Its port is closed: nothing of it serves on.
    await expect(fetch(`http://127.0.0.1:${a.port}/health`)).rejects.toThrow();
    // The other one is as it was: both its processes report the current table.
    await reportingCurrentTable([b.id]);
  }, 60_000);

  it('nginx with examples/data-plane/nginx.conf in front of two es-proxy keeps answering while one is SIGKILLed', async () => {
    if (!existsSync(NGINX)) {
      throw new Error(
        `nginx is not installed (${NGINX}): this test runs nginx in front of two es-proxy processes. ` +
          'Install it (apt-get install nginx-light; scripts/test.sh does) or set NGINX_PATH.',
      );
    }
    const c = startEsProxy('proxy-c', await freePort());
    await reportingCurrentTable([b.id, c.id]);

    const nginxDir = mkdtempSync(join(dir, 'nginx-'));
    const nginxPort = await freePort();
    const conf = render(readFileSync(NGINX_CONF, 'utf8'), [
      [/^error_log stderr warn;$/m, `error_log ${join(nginxDir, 'error.log')} warn;`],
      [/^ {4}server 127\.0\.0\.1:8781 /m, `    server 127.0.0.1:${c.port} `],
      [/^ {4}server 127\.0\.0\.1:8782 /m, `    server 127.0.0.1:${b.port} `],
      [/^ {4}listen 8780;$/m, `    listen 127.0.0.1:${nginxPort};`],
    ]);
    const confFile = join(nginxDir, 'nginx.conf');
    writeFileSync(confFile, conf);
    const nginx = spawn(
      NGINX,
      ['-p', nginxDir, '-e', join(nginxDir, 'error.log'), '-c', confFile, '-g', 'daemon off;'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let nginxStderr = '';
    nginx.stderr.on('data', (chunk: Buffer) => (nginxStderr += chunk.toString()));
    const nginxExited = new Promise((resolve) => nginx.once('exit', resolve));
    const errorLog = () => {
      try {
        return readFileSync(join(nginxDir, 'error.log'), 'utf8');
      } catch {
        return '';
      }
    };
    try {
      await waitFor(
        'nginx answering /health through es-proxy',
        async () => ({ ok: await healthy(nginxPort), exited: nginx.exitCode }),
        (s) => {
          if (s.exited !== null) {
            throw new Error(`nginx exited (${s.exited}): ${nginxStderr} ${errorLog()}`);
          }
          return s.ok;
        },
        10_000,
      );
      expect(readFileSync(join(nginxDir, 'nginx.pid'), 'utf8').trim()).toBe(String(nginx.pid));

      const load = steadyLoad(`http://127.0.0.1:${nginxPort}`, 4);
      await sleep(1_000);
      const killedAt = performance.now();
      await killGroup(c);
      await sleep(2_500);
      const outcomes = await load.stop();
      const cut = outcomes.filter((o) => o.start < killedAt && o.end > killedAt);
      console.log(`nginx: ${outcomes.length} requests, ${cut.length} in flight at the SIGKILL`);
      expect({ failures: failures(outcomes), errorLog: errorLog() }).toMatchObject({
        failures: [],
      });
      expect(outcomes.filter((o) => o.start < killedAt).length).toBeGreaterThan(10);
      expect(outcomes.filter((o) => o.start > killedAt).length).toBeGreaterThan(10);
      // nginx saw the es-proxy die under it (and sent those requests to the other one).
      expect(errorLog()).toContain(`upstream: "http://127.0.0.1:${c.port}/`);
    } finally {
      nginx.kill('SIGQUIT');
      const timer = setTimeout(() => nginx.kill('SIGKILL'), 5_000);
      await nginxExited;
      clearTimeout(timer);
    }
  }, 60_000);
});

/** The example with this test's ports and files; each pattern must match exactly once. */
function render(text: string, replacements: [RegExp, string][]): string {
  let out = text;
  for (const [pattern, replacement] of replacements) {
    const matches = out.match(new RegExp(pattern.source, `${pattern.flags}g`)) ?? [];
    if (matches.length !== 1) {
      throw new Error(
        `examples/data-plane/nginx.conf: expected one line matching ${String(pattern)}, found ${matches.length}`,
      );
    }
    out = out.replace(pattern, replacement);
  }
  return out;
}
