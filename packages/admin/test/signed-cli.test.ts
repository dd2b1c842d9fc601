/**
 * `es` against whoever listens at the scheduler's address, over real sockets: a squatter on
 * the port records what the CLI sends (no admin key, in headers, URL or body) and answers as
 * it likes (the CLI refuses an answer not signed with the admin key); the real admin API,
 * started afterwards on the same port, refuses the recorded requests (made before it
 * started), a signature used twice, a stale one and a changed body, and still takes
 * `Authorization: Bearer <admin key>` (curl).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_SIGNATURE_HEADERS, runCli } from '@es/client';
import { createAdminApi, createMetrics, signAdminRequest, type AdminApi } from '../src/index.js';
import { createFakePool, type FakePool } from './fake-pool.js';

const KEY = 'signed-cli-admin-key-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'es-signed-cli-'));
const keyFile = join(dir, 'admin-key');

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

async function listen(server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return (server.address() as AddressInfo).port;
}

/** A process on the scheduler's port: records each request, answers 200 with `answer`. */
async function squatter(answer: unknown, port = 0) {
  const recorded: Recorded[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      recorded.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      res.setHeader('content-type', 'application/json');
      // No kept-alive socket of this process may be reused by a request meant for the real
      // API started on this port afterwards (the replays below met one: "other side closed").
      res.setHeader('connection', 'close');
      // A forged answer signature too: it does not know the key.
      res.setHeader(ADMIN_SIGNATURE_HEADERS.answer, 'a'.repeat(64));
      res.end(JSON.stringify(answer));
    });
  });
  const bound = await listen(server, port);
  return {
    port: bound,
    recorded,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function es(argv: string[], port: number) {
  let stdout = '';
  let stderr = '';
  const code = await runCli([...argv, '--url', `http://127.0.0.1:${port}`], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env: {},
    cwd: dir,
  });
  return { code, stdout, stderr };
}

let pool: FakePool;
let api: AdminApi;
let real: ServerType | undefined;

/** The real admin API (its clock starts now) on `port`. */
async function startReal(port: number) {
  pool = createFakePool();
  pool.addJob('1', 2);
  const metrics = createMetrics({ defaultMetrics: false });
  const { operator, readModel, events } = pool;
  api = createAdminApi({ operator, readModel, events, metrics, logDir: dir, adminKey: KEY });
  real = serve({ fetch: api.fetch, port, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => real!.once('listening', () => resolve()));
}

beforeAll(() => {
  writeFileSync(keyFile, `${KEY}\n`);
  chmodSync(keyFile, 0o600);
});

afterAll(async () => {
  api?.close();
  if (real !== undefined) await new Promise<void>((resolve) => real!.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

const replay = (port: number, r: Recorded) =>
  fetch(`http://127.0.0.1:${port}${r.url}`, {
    method: r.method,
    headers: Object.fromEntries(
      Object.entries(r.headers).filter(
        (e): e is [string, string] =>
          typeof e[1] === 'string' && !['host', 'connection', 'content-length'].includes(e[0]),
      ),
    ),
    ...(r.method === 'GET' ? {} : { body: r.body }),
  });

describe('es signs admin requests; a squatter gets nothing it can use', () => {
  let recorded: Recorded[] = [];
  let port = 0;

  it('a squatter on the port gets no admin key, and its answers are refused', async () => {
    const fake = await squatter({
      deployment: 'mock',
      previousMaxNodes: 1,
      maxNodes: 9,
      cancelled: [],
      events: [],
    });
    port = fake.port;
    const scale = await es(
      ['scale', 'mock', '--max-nodes', '0', '--admin-key-file', keyFile],
      port,
    );
    const stop = await es(['stop', '--cancel-jobs', '--admin-key-file', keyFile], port);
    const events = await es(['events', '--admin-key-file', keyFile], port);
    const dashboard = await es(['dashboard', '--admin-key-file', keyFile], port);
    await fake.close();
    for (const run of [scale, stop, events, dashboard]) {
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/did not prove that it holds the admin key/);
    }
    recorded = fake.recorded;
    expect(recorded.map((r) => `${r.method} ${r.url}`)).toEqual([
      'POST /api/v1/admin/deployments/mock/scale',
      'POST /api/v1/admin/stop',
      'GET /api/v1/admin/events?limit=50',
      'POST /api/v1/admin/dashboard/login-token',
    ]);
    for (const r of recorded) {
      expect(JSON.stringify(r)).not.toContain(KEY);
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers[ADMIN_SIGNATURE_HEADERS.signature]).toMatch(/^[0-9a-f]{64}$/);
    }
  });

  it('the real admin API, started on that port afterwards, refuses every recorded request', async () => {
    await new Promise((r) => setTimeout(r, 5));
    await startReal(port);
    for (const r of recorded) {
      const res = await replay(port, r);
      expect(res.status, r.url).toBe(401);
      const { error } = (await res.json()) as { error: { message: string; code: string } };
      expect(error.code).toBe('unauthorized');
      expect(error.message).toMatch(/before this scheduler started/);
    }
    expect(pool.calls).toEqual([]);
  });

  it('the CLI works against the real API, whose answers are signed', async () => {
    const scale = await es(
      ['scale', 'mock', '--max-nodes', '3', '--admin-key-file', keyFile],
      port,
    );
    expect(scale).toMatchObject({ code: 0 });
    expect(scale.stdout).toMatch(/^mock: max nodes \d+ → 3/);
    const dashboard = await es(['dashboard', '--admin-key-file', keyFile], port);
    expect(dashboard.code).toBe(0);
    expect(dashboard.stdout).toMatch(
      new RegExp(`^http://127\\.0\\.0\\.1:${port}/dashboard\\?login=[A-Za-z0-9_-]{43}\\n$`),
    );
    expect(dashboard.stdout).not.toContain(KEY);
    // The link logs in once.
    const link = dashboard.stdout.trim();
    const first = await fetch(link, { redirect: 'manual' });
    expect(first.status).toBe(303);
    expect(first.headers.get('set-cookie')).toMatch(/^es_session=/);
    expect((await fetch(link, { redirect: 'manual' })).status).toBe(401);
  });

  it('refuses a signature used twice, a stale one, a changed body; takes the bearer key', async () => {
    const path = '/api/v1/admin/deployments/mock/scale';
    const body = JSON.stringify({ maxNodes: 2 });
    const send = (headers: Record<string, string>, sent = body) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: sent,
      });
    const message = async (res: Response) =>
      ((await res.json()) as { error: { message: string } }).error.message;
    const signed = signAdminRequest(KEY, { method: 'POST', path, body });
    const ok = await send(signed);
    expect(ok.status).toBe(200);
    expect(ok.headers.get(ADMIN_SIGNATURE_HEADERS.answer)).toMatch(/^[0-9a-f]{64}$/);
    const twice = await send(signed);
    expect(twice.status).toBe(401);
    expect(await message(twice)).toMatch(/already used/);
    const stale = await send(
      signAdminRequest(KEY, { method: 'POST', path, body, now: Date.now() - 31_000 }),
    );
    expect(stale.status).toBe(401);
    expect(await message(stale)).toMatch(/older than 30 s/);
    const changed = await send(
      signAdminRequest(KEY, { method: 'POST', path, body }),
      JSON.stringify({ maxNodes: 0 }),
    );
    expect(changed.status).toBe(401);
    expect(await message(changed)).toMatch(/signature does not match/);
    const curl = await send({ authorization: `Bearer ${KEY}` });
    expect(curl.status).toBe(200);
  });
});
