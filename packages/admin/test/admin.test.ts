/**
 * The admin API as an HTTP edge over the pool's roles: every route through `app.request()`
 * (no socket, no process) against a fake operator, read model and event log. What the
 * commands do to a cluster is tested in `@es/pool` (the reconciler) and end to end with
 * real workers in `apps/scheduler/test/admin.e2e.test.ts`.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DrainResponse, LogsResponse, ScaleResponse, StatusResponse } from '@es/client';
import {
  createAdminApi,
  createMetrics,
  mountAdmin,
  type AdminApi,
  type AdminApiOptions,
  type Metrics,
} from '../src/index.js';
import { createFakePool, metric, type FakePool } from './fake-pool.js';

const KEY = 'admin-test-key';
const auth = { authorization: `Bearer ${KEY}` };

let pool: FakePool;
let metrics: Metrics;
let api: AdminApi;
let dir: string;
let stopped: { cancelJobs: boolean }[];

function start(extra: Partial<AdminApiOptions> = {}): AdminApi {
  api?.close();
  api = createAdminApi({
    operator: pool.operator,
    readModel: pool.readModel,
    events: pool.events,
    metrics,
    logDir: join(dir, 'logs'),
    adminKey: KEY,
    queueDepth: () => ({ mock: 3 }),
    stop: (o) => void stopped.push(o),
    ...extra,
  });
  return api;
}

beforeEach(() => {
  pool = createFakePool();
  metrics = createMetrics({ defaultMetrics: false });
  dir = mkdtempSync(join(tmpdir(), 'es-admin-unit-'));
  stopped = [];
  start();
});

afterEach(() => {
  api.close();
  metrics.close();
  rmSync(dir, { recursive: true, force: true });
});

const get = (path: string, headers: Record<string, string> = auth) =>
  api.request(path, { headers });
const post = (path: string, body?: unknown, headers: Record<string, string> = auth) =>
  api.request(path, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
const errorOf = async (res: Response) =>
  ((await res.json()) as { error: Record<string, unknown> }).error;

describe('admin key', () => {
  it('refuses every route without it or with a wrong one, in the OpenAI error shape', async () => {
    const routes: [string, 'GET' | 'POST'][] = [
      ['/api/v1/admin/status', 'GET'],
      ['/api/v1/admin/events', 'GET'],
      ['/api/v1/admin/series', 'GET'],
      ['/api/v1/admin/logs/1', 'GET'],
      ['/metrics', 'GET'],
      ['/api/v1/admin/deployments/mock/scale', 'POST'],
      ['/api/v1/admin/workers/1.0.0/drain', 'POST'],
      ['/api/v1/admin/jobs/1/drain', 'POST'],
      ['/api/v1/admin/stop', 'POST'],
    ];
    for (const [path, method] of routes) {
      for (const headers of [{}, { authorization: 'Bearer nope' }] as Record<string, string>[]) {
        const res = await api.request(path, { method, headers });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(await errorOf(res)).toEqual({
          message:
            'admin key required: send Authorization: Bearer <admin key>, or sign the request (es does: --admin-key-file, ES_ADMIN_KEY or --secret-file)',
          type: 'invalid_request_error',
          param: null,
          code: 'unauthorized',
        });
      }
    }
    expect(pool.calls).toEqual([]);
    expect(stopped).toEqual([]);
  });

  it('refuses an admin body over 64 KiB with 413 too_large, before acting', async () => {
    const big = JSON.stringify({ maxNodes: 1, pad: 'x'.repeat(70 * 1024) });
    const res = await post('/api/v1/admin/deployments/mock/scale', big);
    expect(res.status).toBe(413);
    expect(await errorOf(res)).toMatchObject({ code: 'too_large', param: null });
    expect(pool.calls).toEqual([]);
    const small = await post('/api/v1/admin/deployments/mock/scale', { maxNodes: 1 });
    expect(small.status).toBe(200);
  });

  it('serves /metrics without the key with publicMetrics, and everything without a key set', async () => {
    start({ publicMetrics: true });
    expect((await get('/metrics', {})).status).toBe(200);
    expect((await get('/api/v1/admin/status', {})).status).toBe(401);
    const { adminKey: _, ...open } = {
      operator: pool.operator,
      readModel: pool.readModel,
      events: pool.events,
      metrics,
      logDir: dir,
      adminKey: KEY,
    };
    api.close();
    api = createAdminApi(open);
    expect((await get('/api/v1/admin/status', {})).status).toBe(200);
  });

  it('the dashboard logs in with a session id, never the admin key, and the cookie reads but never acts', async () => {
    expect((await get('/dashboard', {})).status).toBe(401);
    expect(await (await get('/dashboard', {})).text()).toMatch(/name="key"/);
    // The key in the URL is not taken any more (it would stay in the history and logs).
    const inUrl = await get(`/dashboard?key=${KEY}`, {});
    expect(inUrl.status).toBe(401);
    expect(inUrl.headers.get('set-cookie')).toBeNull();
    const form = (key: string) =>
      api.request('/dashboard/login', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ key }).toString(),
      });
    const wrong = await form('wrong');
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    const signIn = await form(KEY);
    expect(signIn.status).toBe(303);
    expect(signIn.headers.get('location')).toBe('/dashboard');
    const cookie = signIn.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(
      /^es_session=[A-Za-z0-9_-]{43}; Max-Age=43200; Path=\/; HttpOnly; SameSite=Strict$/,
    );
    expect(cookie).not.toContain(KEY);
    const jar = { cookie: cookie.split(';')[0] ?? '' };
    const page = await get('/dashboard', jar);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<title>/);
    expect((await get('/api/v1/admin/status', jar)).status).toBe(200);
    expect((await post('/api/v1/admin/stop', {}, jar)).status).toBe(401);
    expect((await post('/api/v1/admin/jobs/1/drain', {}, jar)).status).toBe(401);
    // A session id nobody was given is refused.
    expect((await get('/api/v1/admin/status', { cookie: 'es_session=made-up' })).status).toBe(401);
    // Logged out: the same cookie no longer reads.
    const out = await api.request('/dashboard/logout', { method: 'POST', headers: jar });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/^es_session=; Max-Age=0/);
    expect((await get('/dashboard', jar)).status).toBe(401);
    expect((await get('/api/v1/admin/status', jar)).status).toBe(401);
    expect(stopped).toEqual([]);
    expect(pool.calls).toEqual([]);
  });

  it('a login token works once, within a minute; a session ends after 12 h', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(5_000_000);
      start();
      const mint = async () =>
        (await (await post('/api/v1/admin/dashboard/login-token')).json()) as {
          path: string;
          token: string;
          expiresInSeconds: number;
        };
      expect((await post('/api/v1/admin/dashboard/login-token', undefined, {})).status).toBe(401);
      const first = await mint();
      expect(first.expiresInSeconds).toBe(60);
      expect(first.path).toBe(`/dashboard?login=${first.token}`);
      expect(first.token).not.toContain(KEY);
      const used = await get(first.path, {});
      expect(used.status).toBe(303);
      const jar = { cookie: (used.headers.get('set-cookie') ?? '').split(';')[0] ?? '' };
      expect(jar.cookie).toMatch(/^es_session=/);
      expect(jar.cookie).not.toContain(first.token);
      // Once only: the same link again is the sign-in page, saying why.
      const again = await get(first.path, {});
      expect(again.status).toBe(401);
      expect(await again.text()).toMatch(/used already or is older than a minute/);
      // A token older than a minute is refused.
      const late = await mint();
      vi.setSystemTime(5_000_000 + 61_000);
      expect((await get(late.path, {})).status).toBe(401);
      // The session reads until 12 h after its login, then not.
      vi.setSystemTime(5_000_000 + 12 * 3600_000 - 1_000);
      expect((await get('/api/v1/admin/status', jar)).status).toBe(200);
      vi.setSystemTime(5_000_000 + 12 * 3600_000 + 1_000);
      expect((await get('/api/v1/admin/status', jar)).status).toBe(401);
      expect((await get('/dashboard', jar)).status).toBe(401);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('status and events', () => {
  it('answers the read model in the wire format, with progress from the events and the queue', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(1_000_000);
      start();
      pool.emit({ type: 'submitted', deployment: 'mock', jobId: '7' });
      vi.setSystemTime(1_040_000);
      pool.emit({ type: 'running', deployment: 'mock', jobId: '7' });
      pool.addJob('7', 2, 'loading', { firstSeen: 1_000_000, timeLeftSeconds: 600 });
      pool.emit({ type: 'registered', deployment: 'mock', jobId: '7', workerId: '7.0.0' });
      vi.setSystemTime(1_055_000);
      pool.setWorkers('7', 'ready');
      pool.emit({ type: 'ready', deployment: 'mock', jobId: '7', workerId: '7.0.0' });
      pool.addJob('8', 0, 'ready', { state: 'PENDING', reason: 'Priority', nodes: '' });
      vi.setSystemTime(1_060_000);
      const res = await get('/api/v1/admin/status');
      expect(res.status).toBe(200);
      const body = (await res.json()) as StatusResponse;
      expect(body).toMatchObject({ schedulerId: 'fake', provider: 'local', running: true });
      const d = body.deployments[0]!;
      expect(d).toMatchObject({ name: 'mock', maxNodes: 2, readyWorkers: 2, queued: 3 });
      expect(d.jobs.map((j) => [j.jobId, j.state, j.progressLine])).toEqual([
        ['7', 'RUNNING', 'PENDING 40s → RUNNING 0s → loading 15s → ready'],
        // Seen pending for the first time: it has waited its age.
        ['8', 'PENDING', 'PENDING(Priority) 5s'],
      ]);
      expect(d.jobs[0]).toMatchObject({ timeLeftSeconds: 600, workerIds: ['7.0.0', '7.0.1'] });
      expect(d.workers.map((w) => [w.id, w.state, w.gpus, w.requestErrors])).toEqual([
        ['7.0.0', 'ready', [0, 1], 0],
        ['7.0.1', 'ready', [2, 3], 0],
      ]);
      // The status the app serves and the one it hands the scheduler are the same.
      expect(api.status()).toEqual(body);
    } finally {
      vi.useRealTimers();
    }
  });

  it('lists the recent events, oldest first, at most `limit`', async () => {
    for (const type of ['submitted', 'running', 'ready'] as const) {
      pool.emit({ type, deployment: 'mock', jobId: '7' });
    }
    const all = (await (await get('/api/v1/admin/events')).json()) as {
      events: { type: string }[];
    };
    expect(all.events.map((e) => e.type)).toEqual(['submitted', 'running', 'ready']);
    const two = (await (await get('/api/v1/admin/events?limit=2')).json()) as {
      events: { type: string }[];
    };
    expect(two.events.map((e) => e.type)).toEqual(['running', 'ready']);
  });
});

describe('scale and drains: the operator behind HTTP', () => {
  it('scales through the operator and answers its result', async () => {
    pool.cancelOnScale = ['12'];
    const res = await post('/api/v1/admin/deployments/mock/scale', { maxNodes: 1 });
    expect(res.status).toBe(200);
    expect((await res.json()) as ScaleResponse).toEqual({
      deployment: 'mock',
      previousMaxNodes: 2,
      maxNodes: 1,
      cancelled: ['12'],
    });
    expect(pool.calls).toEqual(['setMaxNodes(mock, 1)']);
  });

  it.each<[string, string, unknown, number, Record<string, unknown>]>([
    [
      'an unknown deployment',
      'nope',
      { maxNodes: 1 },
      404,
      {
        message: 'deployment nope is not served here',
        param: 'name',
        code: 'unknown_deployment',
      },
    ],
    [
      'a negative maxNodes',
      'mock',
      { maxNodes: -1 },
      400,
      {
        message: 'maxNodes must be an integer >= 0, got -1',
        param: 'maxNodes',
        code: 'bad_request',
      },
    ],
    [
      'a fractional maxNodes',
      'mock',
      { maxNodes: 1.5 },
      400,
      {
        message: 'maxNodes must be an integer >= 0, got 1.5',
        param: 'maxNodes',
        code: 'bad_request',
      },
    ],
    [
      'no maxNodes',
      'mock',
      {},
      400,
      {
        message: 'maxNodes must be an integer >= 0, got NaN',
        param: 'maxNodes',
        code: 'bad_request',
      },
    ],
    [
      'a body that is not JSON',
      'mock',
      'max=1',
      400,
      {
        message: 'maxNodes must be an integer >= 0, got NaN',
        param: 'maxNodes',
        code: 'bad_request',
      },
    ],
  ])('refuses to scale %s', async (_, name, body, status, error) => {
    const res = await post(`/api/v1/admin/deployments/${name}/scale`, body);
    expect(res.status).toBe(status);
    expect(await errorOf(res)).toEqual({ type: 'invalid_request_error', ...error });
    expect(pool.deployments.get('mock')?.maxNodes).toBe(2);
  });

  it('drains a worker, and answers 404 unknown_worker for one it does not know', async () => {
    pool.addJob('7', 2);
    const res = await post('/api/v1/admin/workers/7.0.1/drain');
    expect(res.status).toBe(200);
    expect((await res.json()) as DrainResponse).toEqual({ drained: ['7.0.1'] });
    expect(pool.readModel.worker('7.0.1')?.state).toBe('draining');
    const unknown = await post('/api/v1/admin/workers/9.0.0/drain');
    expect(unknown.status).toBe(404);
    expect(await errorOf(unknown)).toEqual({
      message: 'worker 9.0.0 is not registered',
      type: 'invalid_request_error',
      param: 'id',
      code: 'unknown_worker',
    });
  });

  it('drains a job, and answers 404 unknown_job for one without a worker here', async () => {
    pool.addJob('7', 2);
    const res = await post('/api/v1/admin/jobs/7/drain');
    expect(res.status).toBe(200);
    expect((await res.json()) as DrainResponse).toEqual({
      drained: ['7.0.0', '7.0.1'],
      jobId: '7',
    });
    const unknown = await post('/api/v1/admin/jobs/99/drain');
    expect(unknown.status).toBe(404);
    expect(await errorOf(unknown)).toEqual({
      message: 'job 99 has no registered worker here',
      type: 'invalid_request_error',
      param: 'id',
      code: 'unknown_job',
    });
    expect(pool.calls).toEqual(['drainJob(7)', 'drainJob(99)']);
  });

  it('answers any other operator failure as a 500', async () => {
    pool.operator.drainJob = () => {
      throw new Error('the ledger is on fire');
    };
    const res = await post('/api/v1/admin/jobs/7/drain');
    expect(res.status).toBe(500);
    expect(await errorOf(res)).toEqual({
      message: 'the ledger is on fire',
      type: 'server_error',
      param: null,
      code: 'internal',
    });
  });
});

describe('logs', () => {
  it("tails a worker's engine log and a job's batch output, and follows from an offset", async () => {
    const logs = join(dir, 'logs');
    const engineLog = join(logs, 'engine-7.0.0.log');
    mkdirSync(logs, { recursive: true });
    writeFileSync(engineLog, 'mock engine: listening\n');
    writeFileSync(join(logs, 'es-fake-mock-7.out'), 'engine 0 started\n');
    writeFileSync(join(logs, 'es-fake-mock-17.out'), 'not this one\n');
    pool.addJob('7', 1);
    pool.workers[0]!.logFile = engineLog;
    const engine = (await (await get('/api/v1/admin/logs/7.0.0')).json()) as LogsResponse;
    expect(engine).toEqual({ file: engineLog, offset: 23, text: 'mock engine: listening\n' });
    const job = (await (await get('/api/v1/admin/logs/7')).json()) as LogsResponse;
    expect(job.text).toBe('engine 0 started\n');
    writeFileSync(join(logs, 'es-fake-mock-7.out'), 'engine 0 started\nmore\n');
    const next = (await (
      await get(`/api/v1/admin/logs/7?since=${job.offset}`)
    ).json()) as LogsResponse;
    expect(next.text).toBe('more\n');
    const tail = (await (await get('/api/v1/admin/logs/7?bytes=5')).json()) as LogsResponse;
    expect(tail.text).toBe('more\n');
  });

  it('refuses an id that is not one, and names what it looked for when there is no log', async () => {
    mkdirSync(join(dir, 'logs'), { recursive: true });
    const bad = await get('/api/v1/admin/logs/..%2Fsecret');
    expect(bad.status).toBe(400);
    expect(await errorOf(bad)).toMatchObject({ code: 'bad_request', param: 'id' });
    pool.addJob('7', 1);
    const noFile = await get('/api/v1/admin/logs/7.0.0');
    expect(noFile.status).toBe(404);
    expect(await errorOf(noFile)).toMatchObject({
      code: 'no_log',
      message: 'worker 7.0.0 did not report a log file',
    });
    const missing = await get('/api/v1/admin/logs/no-such-job');
    expect(missing.status).toBe(404);
    expect((await errorOf(missing)).message).toMatch(/^no worker no-such-job and no job log/);
  });
});

describe('logs: only the files workers and jobs create in the log directory', () => {
  it.each([
    ['/etc/hostname', 'is outside the log directory'],
    ['../outside/engine-7.0.0.log', 'is outside the log directory'],
    ['engine-7.0.0.log.link', 'is not a log file of a worker or job'],
    ['secret', 'is not a log file of a worker or job'],
  ])(
    'refuses a worker that registered %s (403, naming the file and what is served)',
    async (registered, why) => {
      const logs = join(dir, 'logs');
      mkdirSync(join(dir, 'outside'), { recursive: true });
      mkdirSync(logs, { recursive: true });
      writeFileSync(join(dir, 'outside', 'engine-7.0.0.log'), 'not served\n');
      writeFileSync(join(logs, 'secret'), 'top secret\n');
      writeFileSync(join(logs, 'engine-7.0.0.log.link'), 'x\n');
      const file = registered.startsWith('/') ? registered : join(logs, registered);
      pool.addJob('7', 1);
      pool.workers[0]!.logFile = file;
      const refused = await get('/api/v1/admin/logs/7.0.0');
      expect(refused.status).toBe(403);
      const error = await errorOf(refused);
      expect(error).toMatchObject({ code: 'forbidden', param: 'id' });
      expect(error.message).toBe(
        `the log file of worker 7.0.0 ${file} ${why}: es logs serves only engine-<job>.<restart>.<index>.log and <job name>-<job id>.out/.err files in the scheduler's log directory ${logs}`,
      );
      expect(JSON.stringify(error)).not.toMatch(/top secret|not served/);
    },
  );

  it('refuses symbolic links out of the log directory or to another file in it, for engine and job logs', async () => {
    const logs = join(dir, 'logs');
    mkdirSync(logs, { recursive: true });
    writeFileSync(join(logs, 'secret'), 'top secret\n');
    symlinkSync('/etc/hostname', join(logs, 'engine-7.0.0.log'));
    symlinkSync(join(logs, 'secret'), join(logs, 'engine-7.0.1.log'));
    symlinkSync('/etc/hostname', join(logs, 'es-fake-mock-8.out'));
    pool.addJob('7', 2);
    pool.workers[0]!.logFile = join(logs, 'engine-7.0.0.log');
    pool.workers[1]!.logFile = join(logs, 'engine-7.0.1.log');
    const out = await get('/api/v1/admin/logs/7.0.0');
    expect(out.status).toBe(403);
    expect((await errorOf(out)).message).toContain(
      `${join(logs, 'engine-7.0.0.log')} leads to /etc/hostname, outside the log directory`,
    );
    const inside = await get('/api/v1/admin/logs/7.0.1');
    expect(inside.status).toBe(403);
    expect((await errorOf(inside)).message).toContain(
      `leads to ${join(logs, 'secret')}, not a log file of a worker or job`,
    );
    const job = await get('/api/v1/admin/logs/8');
    expect(job.status).toBe(403);
    expect((await errorOf(job)).message).toMatch(/^the log of job 8 .*leads to \/etc\/hostname/);
  });

  it('serves an engine log through a link to the log directory itself', async () => {
    const real = join(dir, 'real-logs');
    mkdirSync(real);
    writeFileSync(join(real, 'engine-7.0.0.log'), 'ok\n');
    symlinkSync(real, join(dir, 'logs'));
    pool.addJob('7', 1);
    pool.workers[0]!.logFile = join(dir, 'logs', 'engine-7.0.0.log');
    const served = (await (await get('/api/v1/admin/logs/7.0.0')).json()) as LogsResponse;
    expect(served).toEqual({ file: join(real, 'engine-7.0.0.log'), offset: 3, text: 'ok\n' });
  });
});

describe('stop', () => {
  it('answers first, then calls stop', async () => {
    const res = await post('/api/v1/admin/stop', { cancelJobs: true });
    expect(await res.json()).toEqual({ stopping: true, cancelJobs: true });
    expect(stopped).toEqual([]);
    await vi.waitFor(() => expect(stopped).toEqual([{ cancelJobs: true }]));
    await post('/api/v1/admin/stop', {});
    await vi.waitFor(() => expect(stopped).toHaveLength(2));
    expect(stopped[1]).toEqual({ cancelJobs: false });
  });

  it('answers 503 not_ready when the scheduler gave it no way to stop', async () => {
    start({ stop: undefined });
    const res = await post('/api/v1/admin/stop', {});
    expect(res.status).toBe(503);
    // One body for every edge: a 5xx is a server_error, every 4xx an invalid_request_error.
    expect(await errorOf(res)).toMatchObject({ code: 'not_ready', type: 'server_error' });
  });
});

describe('mountAdmin', () => {
  it('answers 503 until attached, counts events from the start, then serves the routes', async () => {
    const app = new Hono();
    const mounted = mountAdmin(app, {
      events: pool.events,
      logDir: dir,
      adminKey: KEY,
      metrics: { defaultMetrics: false },
    });
    try {
      const early = await app.request('/api/v1/admin/status', { headers: auth });
      expect(early.status).toBe(503);
      expect(await errorOf(early)).toMatchObject({ code: 'not_ready' });
      pool.emit({ type: 'preempted', deployment: 'mock', jobId: '7' });
      mounted.attach({ operator: pool.operator, readModel: pool.readModel });
      expect((await app.request('/api/v1/admin/status', { headers: auth })).status).toBe(200);
      const scraped = await (await app.request('/metrics', { headers: auth })).text();
      expect(metric(scraped, 'es_preemptions_total', { deployment: 'mock' })).toBe(1);
      const scaled = await app.request('/api/v1/admin/deployments/mock/scale', {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ maxNodes: 3 }),
      });
      expect(((await scaled.json()) as ScaleResponse).maxNodes).toBe(3);
    } finally {
      mounted.close();
    }
  });
});
