/**
 * The worker API's signature checks over real sockets on 127.0.0.1: a captured request
 * replayed is refused before and after a scheduler restart (a new API on the same port),
 * tampered or stale requests are refused, and refusals are logged. The replay check runs
 * against a double with verification disabled too, and must fail there.
 */
import { serve } from '@hono/node-server';
import type { ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  WORKER_API_PREFIX,
  WORKER_SIGNATURE_HEADERS,
  createWorkerClient,
  deriveKeys,
  signWorkerAnswer,
  signWorkerRequest,
} from '@es/protocol';
import type { FetchLike } from '@es/protocol';
import { createRegistry, createWorkerApi } from '../src/index.js';
import { deployment, registration } from './helpers.js';

const { workerKey } = deriveKeys('a shared secret');

/** A scheduler's worker API served on `port` (0: any); `start` again on its port = restart. */
type StartApi = (port: number) => (request: Request) => Response | Promise<Response>;

interface Served {
  url: string;
  port: number;
  close(): Promise<void>;
}

const open: Served[] = [];
afterEach(async () => {
  for (const served of open.splice(0)) await served.close();
});

async function serveOn(port: number, fetch: ReturnType<StartApi>): Promise<Served> {
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch, hostname: '127.0.0.1', port }, () => resolve(s));
  });
  const bound = (server.address() as AddressInfo).port;
  const served: Served = {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    close: () =>
      new Promise((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
  open.push(served);
  return served;
}

/** Each start is a new scheduler process: a new registry, a new worker API. */
const realApi: StartApi = () =>
  createWorkerApi(createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 }), {
    workerKey,
  }).fetch;

/**
 * The planted violation: the same API behind a wrapper that signs every incoming request
 * afresh before the API sees it (and signs the answer for the caller), i.e. verification
 * disabled.
 */
const unverifiedApi: StartApi = (port) => {
  const inner = realApi(port);
  return async (request) => {
    const body = await request.text();
    const path = new URL(request.url).pathname;
    const headers = new Headers(request.headers);
    for (const [name, value] of Object.entries(
      signWorkerRequest(workerKey, {
        method: request.method,
        path,
        body,
        audience: request.headers.get(WORKER_SIGNATURE_HEADERS.audience) ?? undefined,
      }),
    )) {
      headers.set(name, value);
    }
    const answer = await inner(new Request(request.url, { method: 'POST', headers, body }));
    const text = await answer.text();
    const out = new Headers(answer.headers);
    const nonce = request.headers.get(WORKER_SIGNATURE_HEADERS.nonce) ?? '';
    out.set(
      WORKER_SIGNATURE_HEADERS.signature,
      signWorkerAnswer(workerKey, { nonce, status: answer.status, body: text }),
    );
    return new Response(text, { status: answer.status, headers: out });
  };
};

/** A request exactly as a worker sent it. */
interface Captured {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** A real worker client whose requests are recorded on the way out. */
function capturingClient(url: string) {
  const captured: Captured[] = [];
  const fetchAndRecord: FetchLike = (input, init) => {
    captured.push({
      url: input,
      headers: Object.fromEntries(new Headers(init.headers)),
      body: String(init.body),
    });
    return fetch(input, init);
  };
  return {
    client: createWorkerClient({ schedulerUrl: url, workerKey, fetch: fetchAndRecord }),
    captured,
  };
}

async function replay(request: Captured) {
  const response = await fetch(request.url, {
    method: 'POST',
    headers: request.headers,
    body: request.body,
  });
  return {
    status: response.status,
    body: (await response.json()) as { error?: { code?: string; message?: string } },
  };
}

/** Captures a real registration and heartbeat, replays them, restarts, replays them again. */
async function expectReplayRefused(start: StartApi): Promise<void> {
  const first = await serveOn(0, start(0));
  const { client, captured } = capturingClient(first.url);
  expect((await client.register(registration('900'))).kind).toBe('ok');
  expect((await client.heartbeat('900.0.0', { state: 'ready', restartCount: 0 })).kind).toBe('ok');
  const [register, heartbeat] = captured;
  if (register === undefined || heartbeat === undefined) throw new Error('nothing captured');

  const before = await replay(heartbeat);
  expect(before).toMatchObject({ status: 401, body: { error: { code: 'replayed' } } });
  expect((await replay(register)).status).toBe(401);

  // The scheduler restarts on the same port: the new process never saw these nonces.
  await first.close();
  open.splice(open.indexOf(first), 1);
  await sleep(5);
  const second = await serveOn(first.port, start(first.port));
  expect(second.url).toBe(first.url);
  const after = await replay(heartbeat);
  expect(after).toMatchObject({ status: 401, body: { error: { code: 'stale' } } });
  expect(after.body.error?.message).toMatch(/before this scheduler started/);
  expect(await replay(register)).toMatchObject({
    status: 401,
    body: { error: { code: 'stale' } },
  });
  // The control: a fresh heartbeat passes the signature check (404: the new process does
  // not know the worker yet), so the refusals above are the replay rules'.
  expect((await client.heartbeat('900.0.0', { state: 'ready', restartCount: 0 })).kind).toBe(
    'unknown',
  );
}

describe('signed worker requests over a real socket', () => {
  it('refuses a captured heartbeat (and registration) replayed, before and after a restart', async () => {
    await expectReplayRefused(realApi);
  });

  it('the replay check fails against an API whose verification is disabled (planted)', async () => {
    // It fails at the first replay (answered 200), not on the way there.
    await expect(expectReplayRefused(unverifiedApi)).rejects.toThrow(/to match object/);
  });

  it('refuses a tampered body, another path and an old timestamp, with the reason, and logs it', async () => {
    const warnings: { fields: Record<string, unknown>; message: string }[] = [];
    const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
    const api = createWorkerApi(registry, {
      workerKey,
      logger: { warn: (fields, message) => warnings.push({ fields, message }) },
    });
    const served = await serveOn(0, api.fetch);
    registry.register(registration('901', 0, { state: 'ready' }));
    const path = `${WORKER_API_PREFIX}/901.0.0/heartbeat`;
    const body = JSON.stringify({ state: 'ready', restartCount: 0 });
    const send = (to: string, headers: Record<string, string>, text = body) =>
      replay({
        url: `${served.url}${to}`,
        headers: { ...headers, 'content-type': 'application/json' },
        body: text,
      });

    const signed = signWorkerRequest(workerKey, { method: 'POST', path, body });
    const tampered = await send(path, signed, body.replace('ready', 'loading'));
    expect(tampered).toMatchObject({ status: 401, body: { error: { code: 'bad_signature' } } });
    const drainPath = `${WORKER_API_PREFIX}/901.0.0/drain`;
    const elsewhere = await send(drainPath, signed, JSON.stringify({ reason: 'x' }));
    expect(elsewhere).toMatchObject({ status: 401, body: { error: { code: 'bad_signature' } } });
    expect(registry.worker('901.0.0')?.state).toBe('ready');
    const old = signWorkerRequest(
      workerKey,
      { method: 'POST', path, body },
      { now: Date.now() - 31_000 },
    );
    expect(await send(path, old)).toMatchObject({
      status: 401,
      body: { error: { code: 'stale' } },
    });
    // The untouched request still passes (the refusals did not use up its nonce).
    expect((await send(path, signed)).status).toBe(200);

    expect(warnings.map((w) => w.fields.code)).toEqual(['bad_signature', 'stale']);
    expect(warnings[0]?.message).toMatch(/^worker request refused \(bad_signature\): /);
    expect(warnings[0]?.fields).toMatchObject({ method: 'POST', path });
  });
});
