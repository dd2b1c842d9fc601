import { describe, expect, it } from 'vitest';
import {
  WORKER_SIGNATURE_HEADERS,
  createWorkerClient,
  createWorkerRequestVerifier,
  signWorkerAnswer,
} from '../src/index.js';
import type { FetchLike, HeartbeatRequest, RegisterRequest } from '../src/index.js';

const beat: HeartbeatRequest = { state: 'ready', restartCount: 0 };
const registration: RegisterRequest = {
  deployment: 'd',
  jobId: '1',
  restartCount: 0,
  index: 0,
  host: 'h',
  port: 1,
  gpus: [0],
  engine: 'mock',
  model: 'm',
  node: 'n',
  state: 'loading',
};

/** A fetch answering `status` with `body`, recording the calls. */
function answering(status: number, body: unknown) {
  const calls: { url: string; init: RequestInit }[] = [];
  const fetch: FetchLike = (url, init) => {
    calls.push({ url, init });
    return new Response(typeof body === 'string' ? body : JSON.stringify(body), { status });
  };
  return { calls, fetch };
}

/**
 * A fetch answering `status` with `body`, signed with `key` over the request's nonce (or
 * over `nonce` when given: an answer to another request), recording the calls.
 */
function answeringSigned(key: string, status: number, body: unknown, nonce?: string) {
  const calls: { url: string; init: RequestInit }[] = [];
  const fetch: FetchLike = (url, init) => {
    calls.push({ url, init });
    const text = JSON.stringify(body);
    const own = new Headers(init.headers).get(WORKER_SIGNATURE_HEADERS.nonce) ?? '';
    const signature = signWorkerAnswer(key, { nonce: nonce ?? own, status, body: text });
    return new Response(text, {
      status,
      headers: { [WORKER_SIGNATURE_HEADERS.signature]: signature },
    });
  };
  return { calls, fetch };
}

describe('createWorkerClient (injected fetch)', () => {
  it('posts JSON signed with the worker key (never sent) to the route under the current URL', async () => {
    let url = 'http://login1:8780';
    const { calls, fetch } = answeringSigned('k3y', 200, { ok: true });
    const client = createWorkerClient({ schedulerUrl: () => url, workerKey: 'k3y', fetch });
    expect(await client.heartbeat('42.0.1', beat)).toEqual({
      ok: true,
      kind: 'ok',
      status: 200,
      body: { ok: true },
    });
    url = 'http://login2:9000/es';
    expect(client.schedulerUrl).toBe(url);
    await client.drain('42.0.1', { reason: 'SIGTERM' });
    expect(calls.map((c) => c.url)).toEqual([
      'http://login1:8780/api/v1/workers/42.0.1/heartbeat',
      'http://login2:9000/es/api/v1/workers/42.0.1/drain',
    ]);
    expect(calls[0]?.init.method).toBe('POST');
    expect(JSON.parse(String(calls[1]?.init.body))).toEqual({ reason: 'SIGTERM' });
    // The signature covers the route path, not the base URL's prefix ('/es').
    const verifier = createWorkerRequestVerifier({ key: 'k3y', startedAt: 0 });
    const checks = calls.map((call, i) => {
      const headers = new Headers(call.init.headers);
      expect(headers.has('authorization')).toBe(false);
      expect([...headers.values()].some((value) => value.includes('k3y'))).toBe(false);
      const route = ['heartbeat', 'drain'][i];
      return verifier.verify({
        method: 'POST',
        path: `/api/v1/workers/42.0.1/${route}`,
        body: String(call.init.body),
        header: (name) => headers.get(name) ?? undefined,
      });
    });
    expect(checks.map((c) => c.ok)).toEqual([true, true]);
    const nonces = calls.map((c) => new Headers(c.init.headers).get('x-es-nonce'));
    expect(new Set(nonces).size).toBe(2);
  });

  it('signs nothing without a key', async () => {
    const { calls, fetch } = answering(200, { ok: true });
    await createWorkerClient({ schedulerUrl: 'http://s:1', fetch }).deregister('1.0.0', {
      reason: 'x',
    });
    const headers = new Headers(calls[0]?.init.headers);
    expect(headers.has('authorization')).toBe(false);
    expect(headers.has('x-es-signature')).toBe(false);
  });

  it.each([
    ['unsigned', (status: number, body: unknown) => answering(status, body)],
    [
      'signed with another key',
      (status: number, body: unknown) => answeringSigned('other', status, body),
    ],
    [
      'signed for another request',
      (status: number, body: unknown) =>
        answeringSigned('k3y', status, body, 'a-nonce-of-another-request'),
    ],
  ])('ignores an answer %s: a 409 does not fence, a 200 does not register', async (_, make) => {
    for (const [status, body] of [
      [409, { error: { message: 'exit', type: 'conflict', code: 'fenced' } }],
      [200, { workerId: '1.0.0', heartbeatIntervalMs: 1000 }],
      [404, { error: { message: 'who?', type: 'not_found', code: 'unknown_worker' } }],
    ] as const) {
      const { fetch } = make(status, body);
      const client = createWorkerClient({ schedulerUrl: 'http://s:1', workerKey: 'k3y', fetch });
      const result = await client.register(registration);
      expect(result).toMatchObject({ ok: false, kind: 'unreachable', unsigned: true });
      expect(result.ok ? '' : result.message).toMatch(
        new RegExp(`ignored an answer \\(HTTP ${status}\\) (not|wrongly) signed`),
      );
    }
  });

  it('obeys a signed 409 (fenced)', async () => {
    const { fetch } = answeringSigned('k3y', 409, {
      error: { message: 'exit', type: 'conflict', code: 'fenced' },
    });
    const client = createWorkerClient({ schedulerUrl: 'http://s:1', workerKey: 'k3y', fetch });
    expect(await client.heartbeat('1.0.0', beat)).toMatchObject({ kind: 'fenced', status: 409 });
  });

  it.each([
    [404, 'unknown'],
    [409, 'fenced'],
    [401, 'unauthorized'],
    [403, 'unauthorized'],
    [400, 'rejected'],
    [413, 'rejected'],
    [422, 'rejected'],
    [500, 'unexpected'],
    [503, 'unexpected'],
    [302, 'unexpected'],
  ])('maps HTTP %i to %s with the server message and code', async (status, kind) => {
    const { fetch } = answering(status, {
      error: { message: `said ${status}`, type: 'invalid_request_error', param: null, code: 'c' },
    });
    const result = await createWorkerClient({ schedulerUrl: 'http://s:1', fetch }).heartbeat(
      '1.0.0',
      beat,
    );
    expect(result).toEqual({ ok: false, kind, status, message: `said ${status}`, code: 'c' });
  });

  it('uses the text of a body that is not an error body', async () => {
    const { fetch } = answering(502, '  <html>Bad gateway</html>\n');
    const result = await createWorkerClient({ schedulerUrl: 'http://s:1', fetch }).heartbeat(
      '1.0.0',
      beat,
    );
    expect(result).toMatchObject({ kind: 'unexpected', message: '<html>Bad gateway</html>' });
    const empty = answering(500, '');
    expect(
      await createWorkerClient({ schedulerUrl: 'http://s:1', fetch: empty.fetch }).drain('1', {
        reason: '',
      }),
    ).toMatchObject({ kind: 'unexpected', message: 'no reason given', code: undefined });
  });

  it('does not take a 200 whose body is off-contract', async () => {
    const { fetch } = answering(200, { workerId: 42 });
    const result = await createWorkerClient({ schedulerUrl: 'http://s:1', fetch }).register(
      registration,
    );
    expect(result).toMatchObject({ ok: false, kind: 'unexpected', status: 200 });
    expect(result.ok ? '' : result.message).toMatch(/not the protocol's/);
  });

  it('reports a refused connection as unreachable, naming the URL and the cause', async () => {
    const fetch: FetchLike = () => {
      throw new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:9') });
    };
    const result = await createWorkerClient({
      schedulerUrl: 'http://127.0.0.1:9',
      fetch,
    }).heartbeat('1.0.0', beat);
    expect(result).toMatchObject({
      ok: false,
      kind: 'unreachable',
      timedOut: false,
      message:
        'POST http://127.0.0.1:9/api/v1/workers/1.0.0/heartbeat: fetch failed (connect ECONNREFUSED 127.0.0.1:9)',
    });
  });

  it('times out even when the fetch ignores the signal; a call can shorten the timeout', async () => {
    const fetch: FetchLike = () => new Promise<Response>(() => undefined);
    const client = createWorkerClient({ schedulerUrl: 'http://s:1', fetch, timeoutMs: 60_000 });
    const result = await client.drain('1.0.0', { reason: 'x' }, { timeoutMs: 20 });
    expect(result).toMatchObject({
      kind: 'unreachable',
      timedOut: true,
      message: 'POST http://s:1/api/v1/workers/1.0.0/drain: timed out after 20 ms',
    });
  });

  it('gives up at once when the caller aborts', async () => {
    const fetch: FetchLike = () => new Promise<Response>(() => undefined);
    const client = createWorkerClient({ schedulerUrl: 'http://s:1', fetch });
    const controller = new AbortController();
    const pending = client.heartbeat('1.0.0', beat, { signal: controller.signal });
    controller.abort(new Error('stopping'));
    expect(await pending).toMatchObject({ kind: 'unreachable', timedOut: false });
    expect(
      await client.heartbeat('1.0.0', beat, { signal: AbortSignal.abort(new Error('early')) }),
    ).toMatchObject({ kind: 'unreachable', message: expect.stringMatching(/early$/) });
  });

  it('reports a scheduler URL that is not a URL as unreachable, without calling', async () => {
    const { calls, fetch } = answering(200, { ok: true });
    const result = await createWorkerClient({ schedulerUrl: 'not a url', fetch }).heartbeat(
      '1',
      beat,
    );
    expect(calls).toHaveLength(0);
    expect(result).toMatchObject({
      kind: 'unreachable',
      message: 'POST /api/v1/workers/1/heartbeat: invalid scheduler URL "not a url"',
    });
  });
});
