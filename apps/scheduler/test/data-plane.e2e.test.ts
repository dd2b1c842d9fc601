/**
 * The scheduler's data plane, end to end: the built `es-scheduler --backend local
 * --proxy-processes 2` serves the client port through one detached `es-proxy` supervisor;
 * a SIGKILL of the scheduler leaves the client port answering, a restarted scheduler
 * re-adopts that es-proxy (starts no second one) and the proxies' routing table follows the
 * new scheduler; a SIGTERM of a local-backend scheduler ends es-proxy with its jobs.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '@es/protocol';
// apps/scheduler does not depend on @es/client (the `es` CLI); its tests run its code.
import { runCli, type StatusResponse } from '../../../packages/client/src/index.js';
import {
  FAST_FLAGS,
  freePort,
  killStartedSchedulers,
  runSchedulerToExit,
  startSchedulerProcess,
  waitFor,
  type LogLine,
  type SchedulerProcess,
} from './harness.js';
import { processAlive } from '../../../packages/testkit/src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'es-data-plane-e2e-'));
const logDir = join(dir, 'logs');
const stateFile = join(logDir, 'data-plane.json');

// One local job of 2 engines (2 GPUs, TP 1); up to 2 jobs once scaled.
const ARGS = [
  ...['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'],
  ...['--local-nodes', '2', '--max-nodes', '1', '--gpus-per-node', '2'],
  ...['--tensor-parallel-size', '1', '--proxy-processes', '2', '--scheduler-id', 'e2e-dp'],
  ...FAST_FLAGS,
];

interface State {
  pid: number;
  port: number;
  processes: number;
  workers: number[];
}

const readState = () => JSON.parse(readFileSync(stateFile, 'utf8')) as State;

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

/** Live es-proxy processes of this log directory (supervisor and workers). */
function esProxyPids(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => cmdline(pid).includes(stateFile) && processAlive(pid));
}

/** The supervisors: es-proxy processes whose parent is no es-proxy of this directory. */
function supervisors(): number[] {
  const all = esProxyPids();
  return all.filter((pid) => !all.includes(parentOf(pid)));
}

const msgs = (s: SchedulerProcess) => s.logs.map((l: LogLine) => l.msg);

const adminHeaders = () => ({
  authorization: `Bearer ${deriveKeys(readFileSync(join(logDir, 'secret'), 'utf8')).adminToken}`,
});

async function post(url: string, path: string, body: unknown): Promise<unknown> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { ...adminHeaders(), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

interface SeedWorkerRow {
  worker_id: string;
  status: string;
  slurm_job_id: string;
}

const workers = async (s: SchedulerProcess) =>
  (await s.get<{ workers: SeedWorkerRow[] }>('/workers')).workers;

/** One chat through the client port; the worker that answered it. */
async function chat(client: OpenAI): Promise<string> {
  const { data, response } = await client.chat.completions
    .create({ model: 'mock-model', messages: [{ role: 'user', content: 'hello' }], max_tokens: 3 })
    .withResponse();
  expect(data.choices[0]?.message.content?.length).toBeGreaterThan(0);
  return response.headers.get('x-elastic-selected-worker-id') ?? '';
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

afterAll(async () => {
  await killStartedSchedulers();
  // es-proxy outlives a SIGKILLed scheduler on purpose: end whatever of it a failure left.
  for (const pid of esProxyPids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
  }
});

describe('es-scheduler --proxy-processes 2 (local backend)', () => {
  let port: number;
  let first: SchedulerProcess;
  let client: OpenAI;
  let firstPid: number;

  it('serves /v1 through a detached es-proxy of 2 processes on the client port', async () => {
    port = await freePort();
    first = await startSchedulerProcess({ args: ARGS, logDir, port });
    client = new OpenAI({ baseURL: `${first.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    await waitFor(
      '2 ready workers',
      () => workers(first),
      (w) => w.length === 2 && w.every((x) => x.status === 'READY'),
      60_000,
    );

    const state = readState();
    firstPid = state.pid;
    expect(state).toMatchObject({ port, processes: 2 });
    expect(state.workers).toHaveLength(2);
    expect(supervisors()).toEqual([state.pid]);
    // Its own process group: a signal to the scheduler's group does not reach it.
    const pgid = Number(
      readFileSync(`/proc/${state.pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[2],
    );
    expect(pgid).toBe(state.pid);

    // The URL files: clients and es read the client port, es-proxy follows the control port.
    const controlUrl = readFileSync(join(logDir, 'control-url'), 'utf8').trim();
    expect(readFileSync(join(logDir, 'scheduler-url'), 'utf8').trim()).toBe(first.url);
    expect(controlUrl).not.toBe(first.url);
    const serving = first.logs.find((l) => l.msg.startsWith('serving /v1'));
    expect(serving?.msg).toContain(`on http://127.0.0.1:${port}`);
    expect(serving?.msg).toContain(`control port ${new URL(controlUrl).port}`);

    expect((await chat(client)).length).toBeGreaterThan(0);
    // es signs admin requests for the client port; es-proxy forwards them to the control
    // port, and the scheduler accepts both.
    const adminKey = adminHeaders().authorization.slice('Bearer '.length);
    for (const url of [first.url, controlUrl]) {
      let out = '';
      const code = await runCli(['status', '--json'], {
        stdout: (t) => (out += t),
        stderr: (t) => (out += t),
        env: { ES_SCHEDULER_URL: url, ES_ADMIN_KEY: adminKey },
      });
      expect({ url, code, out }).toMatchObject({ code: 0 });
    }
  }, 120_000);

  it('counts the requests in flight through es-proxy as its workers', async () => {
    // What the reconciler waits for before it cancels a drained job (a time-limit
    // retirement, an operator's job drain): it read 0 for every worker while the requests
    // ran through es-proxy, and cancelled drained jobs with generations still on them.
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'a long answer' }],
      max_tokens: 800,
      stream: true,
    });
    // The admin status shows each worker as the reconciler sees it.
    const inFlight = async () => {
      const response = await fetch(`${first.url}/api/v1/admin/status`, { headers: adminHeaders() });
      const body = (await response.json()) as StatusResponse;
      return body.deployments.flatMap((d) => d.workers.map((w) => w.inFlight));
    };
    const seen = waitFor(
      'a worker with a request in flight',
      inFlight,
      (n) => n.includes(1),
      5_000,
      100,
    );
    let tokens = 0;
    for await (const chunk of stream) if (chunk.choices[0]?.delta.content) tokens++;
    await seen;
    expect(tokens).toBeGreaterThan(100);
    await waitFor('none once it ended', inFlight, (n) => n.every((x) => x === 0), 5_000, 100);
  }, 60_000);

  let second: SchedulerProcess;

  it('keeps the client port answering while the scheduler is SIGKILLed; a restart re-adopts es-proxy and its table follows', async () => {
    const before = await workers(first);
    await first.stop('SIGKILL');
    expect(
      await portOpen(
        Number(new URL(readFileSync(join(logDir, 'control-url'), 'utf8').trim()).port),
      ),
    ).toBe(false);
    // No scheduler: the data plane serves from its last table, the workers keep serving.
    for (let i = 0; i < 6; i++) {
      expect(before.map((w) => w.worker_id)).toContain(await chat(client));
    }

    second = await startSchedulerProcess({ args: ARGS, logDir, port });
    await waitFor(
      'the serving line',
      () => msgs(second),
      (m) => m.some((x) => x.startsWith('serving /v1')),
      20_000,
    );
    expect(msgs(second).some((m) => m.startsWith(`re-adopted es-proxy (pid ${firstPid}`))).toBe(
      true,
    );
    expect(readState().pid).toBe(firstPid);
    expect(supervisors()).toEqual([firstPid]);

    // A second job's workers register with the new scheduler only, and the old job's are
    // drained through it: every request must go to a worker es-proxy can only know from the
    // new scheduler's watch stream.
    await post(second.url, '/api/v1/admin/deployments/mock-model/scale', { maxNodes: 2 });
    await waitFor(
      '4 ready workers',
      () => workers(second),
      (w) => w.filter((x) => x.status === 'READY').length === 4,
      60_000,
    );
    const old = before.map((w) => w.worker_id);
    for (const id of old) await post(second.url, `/api/v1/admin/workers/${id}/drain`, {});
    // Within a second of the drain the old workers leave routing.
    await new Promise((r) => setTimeout(r, 1_000));
    const answered = new Set<string>();
    for (let i = 0; i < 8; i++) answered.add(await chat(client));
    expect([...answered].filter((id) => old.includes(id) || id === '')).toEqual([]);
  }, 180_000);

  it('starts another es-proxy on the same port when its supervisor dies while the scheduler lives', async () => {
    const dead = readState().pid;
    // The primary and its workers (node:cluster workers exit with their primary).
    process.kill(-dead, 'SIGKILL');
    const killedAt = Date.now();
    const replaced = await waitFor(
      'a new es-proxy serving the port',
      // Removed and written again by the scheduler's new start: absent for a moment.
      () => {
        try {
          return readState();
        } catch {
          return undefined;
        }
      },
      (s) => s !== undefined && s.pid !== dead && processAlive(s.pid),
      20_000,
      50,
    );
    expect(replaced).toMatchObject({ port, processes: 2 });
    expect(supervisors()).toEqual([replaced!.pid]);
    expect(
      msgs(second).some((m) => m.startsWith(`es-proxy (pid ${dead}) serving port ${port} is gone`)),
    ).toBe(true);
    // It serves the current table at once: the new workers, none of the drained ones.
    await waitFor(
      'a chat through the new es-proxy',
      () => chat(client).catch(() => ''),
      (id) => id !== '',
      10_000,
      100,
    );
    console.log(
      `es-proxy serving again ${Date.now() - killedAt} ms after its supervisor was SIGKILLed`,
    );
  }, 60_000);

  it('ends es-proxy with the jobs when the local-backend scheduler gets SIGTERM', async () => {
    const pids = esProxyPids();
    expect(pids.length).toBe(3);
    const exit = await second.stop('SIGTERM', 40_000);
    expect(exit.code).toBe(0);
    expect(pids.filter(processAlive)).toEqual([]);
    expect(await portOpen(port)).toBe(false);
  }, 60_000);

  it('refuses to start when the client port is taken, naming it, the fix and what es-proxy said', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port: busy } = taken.address() as { port: number };
    const busyLogDir = join(dir, 'busy-logs');
    try {
      const run = await runSchedulerToExit(
        [
          // No jobs: this start is refused before any would run.
          ...ARGS.map((arg, i) => (ARGS[i - 1] === '--max-nodes' ? '0' : arg)),
          ...['--port', String(busy), '--log-dir', busyLogDir],
        ],
        30_000,
      );
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(
        new RegExp(`port ${busy} on 127\\.0\\.0\\.1 is in use .*Stop it or pass --port`),
      );
      expect(run.stderr).toContain(`last lines of ${join(busyLogDir, 'es-proxy.log')}`);
    } finally {
      taken.close();
    }
  }, 60_000);
});
