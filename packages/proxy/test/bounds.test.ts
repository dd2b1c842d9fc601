import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, startProxyServer } from '../src/index.js';
import type { ProxyAppOptions, ProxyRequestRecord } from '../src/index.js';
import { spawnMockEngine } from './engine-process.js';
import { addFakeWorkers, until } from './harness.js';
import { createStaticPool, deploymentView } from './static-pool.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(
  options: Omit<ProxyAppOptions, 'pool'>,
  engineUrl?: string,
  maxConnections?: number,
) {
  const pool = createStaticPool([deploymentView('llama')]);
  if (engineUrl === undefined) await addFakeWorkers(pool, 'llama', 1, cleanups as never);
  else pool.add({ id: 'w0', deployment: 'llama', baseUrl: engineUrl });
  const records: ProxyRequestRecord[] = [];
  const app = createProxyApp({ pool, onRequestComplete: (r) => records.push(r), ...options });
  const server = await startProxyServer({
    fetch: app.fetch,
    ...(maxConnections === undefined ? {} : { maxConnections }),
  });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  return { url: server.url, port: server.port, records };
}

/** The mock engine's `vllm:num_requests_running`. */
async function running(engineUrl: string): Promise<number> {
  const text = await (await fetch(`${engineUrl}/metrics`)).text();
  const match = /^vllm:num_requests_running\{[^}]*\} (\S+)$/m.exec(text);
  if (match === null) throw new Error(`no running gauge in /metrics:\n${text.slice(0, 500)}`);
  return Number(match[1]);
}

/**
 * A client that sends a long streaming chat request, reads its first bytes and then never
 * reads again, with a 4 KiB receive buffer (Node cannot set SO_RCVBUF, hence Python): the
 * stream backs up at once instead of after the megabytes loopback buffers grow to.
 */
function stalledStreamClient(port: number): ChildProcess {
  const body = JSON.stringify({
    model: 'llama',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
    max_tokens: 2_000_000,
  });
  const head =
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  const script = [
    'import socket, sys',
    's = socket.socket()',
    's.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)',
    `s.connect(("127.0.0.1", ${port}))`,
    's.sendall(sys.argv[1].encode())',
    's.recv(1)',
    'print("started", flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  const child = spawn('python3', ['-c', script, head + body], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  cleanups.push(() => {
    child.kill('SIGKILL');
  });
  return child;
}

describe('a client that stops reading a stream', () => {
  // Set-up alone (an engine process generating 100,000 tokens/s, the proxy, a Python client)
  // takes about 7 s on a busy 2-core machine: the tests' limits leave room for it.
  async function stalled(clientIdleTimeoutMs: number) {
    const engine = await spawnMockEngine(
      [
        '--served-model-name',
        'llama',
        '--ttft',
        '1',
        '--tokens-per-second',
        '100000',
        '--max-model-len',
        '3000000',
      ],
      cleanups,
    );
    const { port, records } = await serve({ clientIdleTimeoutMs }, engine.url);
    stalledStreamClient(port);
    await until(async () => (await running(engine.url)) === 1, 15_000);
    return { engine, records };
  }

  it('is cut after the idle timeout: the upstream request is aborted, the engine slot freed', async () => {
    const { engine, records } = await stalled(1_000);
    // The stream backs up within a second or two (socket buffers), then 1 s of idleness.
    await until(async () => (await running(engine.url)) === 0, 10_000);
    await until(() => records.length === 1, 5_000);
    expect(records[0]).toMatchObject({ outcome: 'client-abort', stream: true });
  }, 60_000);

  it('without the timeout (0) it holds the engine slot: the test above can fail', async () => {
    const { engine, records } = await stalled(0);
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    expect(await running(engine.url)).toBe(1);
    expect(records).toHaveLength(0);
  }, 60_000);
});

/** Send `headers` and `bytes` of a body declaring `declared` bytes; resolves with the answer. */
function upload(
  port: number,
  declared: number,
  bytes: number,
): {
  response: Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>;
  /** Send the next `more` bytes of the body; false once all are sent. */
  send(more: number): boolean;
  finish(): void;
} {
  const prefix = '{"model":"llama","messages":[{"role":"user","content":"';
  const suffix = '"}]}';
  const filler = declared - prefix.length - suffix.length;
  const whole = Buffer.from(prefix + 'x'.repeat(filler) + suffix);
  const req = request({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', 'content-length': String(declared) },
  });
  const response = new Promise<{
    status: number;
    headers: IncomingMessage['headers'];
    body: string;
  }>((resolve, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
  let sent = bytes;
  req.write(whole.subarray(0, sent));
  cleanups.push(() => {
    req.destroy();
  });
  return {
    response,
    send(more) {
      if (sent === declared) return false;
      const from = sent;
      sent = Math.min(declared, sent + more);
      if (sent === declared) req.end(whole.subarray(from));
      else req.write(whole.subarray(from, sent));
      return sent < declared;
    },
    finish: () => req.end(whole.subarray(sent)),
  };
}

describe('the global budget of buffered bodies', () => {
  const MiB = 1024 * 1024;
  const KiB = 1024;
  // 1 MiB of bodies (each byte charged 4 times).
  const budget = (bodyBudgetWaitMs: number) => ({
    maxBodyBytes: MiB,
    bodyBudgetBytes: 4 * MiB,
    bodyBudgetWaitMs,
  });
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  /** A small chat request of another client: its status and how long it took. */
  async function smallChat(url: string): Promise<{ status: number; ms: number }> {
    const started = performance.now();
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] }),
    });
    await response.arrayBuffer();
    return { status: response.status, ms: performance.now() - started };
  }

  /** A 700 KiB body half arrived (so it holds its whole length), then a second whole one. */
  async function twoBodies(bodyBudgetWaitMs: number) {
    const { port } = await serve(budget(bodyBudgetWaitMs));
    const first = upload(port, 700 * KiB, 400 * KiB);
    await pause(200);
    return { first, second: upload(port, 700 * KiB, 700 * KiB) };
  }

  it('makes a body that does not fit wait, then serves it once room is freed', async () => {
    const { first, second } = await twoBodies(5_000);
    let secondDone = false;
    void second.response.then(() => (secondDone = true));
    await pause(500);
    expect(secondDone).toBe(false);
    first.finish();
    expect((await first.response).status).toBe(200);
    expect((await second.response).status).toBe(200);
  });

  it('answers 503 body_budget_exhausted with Retry-After when no room frees in time', async () => {
    const { first, second } = await twoBodies(300);
    const answer = await second.response;
    expect(answer.status).toBe(503);
    expect(answer.headers['retry-after']).toBe('5');
    expect(JSON.parse(answer.body)).toMatchObject({
      error: { code: 'body_budget_exhausted', type: 'server_error' },
    });
    // The held body still goes through.
    first.finish();
    expect((await first.response).status).toBe(200);
  });

  it('charges a body as it arrives: slow uploads of large declared bodies do not hold back a small one', async () => {
    const { url, port } = await serve(budget(3_000));
    // Each declares 700 KiB (all together 14 times the budget) and sends 100 bytes.
    const slow = Array.from({ length: 20 }, () => upload(port, 700 * KiB, 100));
    await pause(300);
    const small = await smallChat(url);
    expect(small.status).toBe(200);
    expect(small.ms).toBeLessThan(1_000);
    // Sent whole at once they are read in turn (or told to come back), never crash it.
    for (const body of slow) body.finish();
    const statuses = await Promise.all(slow.map(async (body) => (await body.response).status));
    expect(statuses.every((status) => status === 200 || status === 503)).toBe(true);
    expect(statuses).toContain(200);
  });

  it('charges a chunked body as it arrives past its first 64 KiB too: a stalled one does not hold the budget', async () => {
    const { url, port } = await serve(budget(3_000));
    // No Content-Length: sent chunked, 200 KiB, then nothing more.
    const stalled = request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json' },
    });
    stalled.on('error', () => {});
    cleanups.push(() => {
      stalled.destroy();
    });
    stalled.write(
      `{"model":"llama","messages":[{"role":"user","content":"${'x'.repeat(200 * KiB)}`,
    );
    await pause(300);
    const small = await smallChat(url);
    expect(small.status).toBe(200);
    expect(small.ms).toBeLessThan(1_000);
  });

  it('reads two large bodies arriving together one after the other, never each holding half', async () => {
    const { port } = await serve(budget(5_000));
    // Both start within their allowance (charged as they arrive), then send the rest at once:
    // together they need 1.4 MiB of a 1 MiB budget.
    const first = upload(port, 700 * KiB, 32 * KiB);
    const second = upload(port, 700 * KiB, 32 * KiB);
    await pause(200);
    const started = performance.now();
    // Their bytes arrive interleaved (on loopback a socket is otherwise read whole at once).
    for (let more = true; more; await pause(10)) {
      more = first.send(64 * KiB);
      more = second.send(64 * KiB) || more;
    }
    const answers = await Promise.all([first.response, second.response]);
    expect(answers.map((answer) => answer.status)).toEqual([200, 200]);
    // Not after the budget's wait (5 s): the second waited for the first only.
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  it('when waiting bodies alone keep the oldest out, the youngest gives way at once with 503', async () => {
    const { port } = await serve(budget(5_000));
    // Each is as large as the whole budget: the first cannot be read while the second holds
    // even its allowance, and the second waits behind the first.
    const first = upload(port, MiB, 32 * KiB);
    await pause(100);
    const second = upload(port, MiB, 32 * KiB);
    await pause(200);
    const started = performance.now();
    first.finish();
    await pause(100);
    second.finish();
    const [one, two] = await Promise.all([first.response, second.response]);
    expect(one.status).toBe(200);
    expect(two.status).toBe(503);
    expect(two.headers['retry-after']).toBe('5');
    expect(JSON.parse(two.body)).toMatchObject({ error: { code: 'body_budget_exhausted' } });
    // Neither waited for the budget's wait to run out.
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  it('records a client that leaves mid-body as a client abort, not an internal error', async () => {
    const warnings: string[] = [];
    const { port, records } = await serve({
      ...budget(5_000),
      logger: { warn: (_fields, message) => warnings.push(message) },
    });
    const socket = connect({ port, host: '127.0.0.1' });
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${100 * KiB}\r\n\r\n{"model":"llama","messages":[`,
    );
    await pause(200);
    socket.destroy();
    await until(() => records.length === 1, 5_000);
    expect(records[0]).toMatchObject({
      outcome: 'client-abort',
      errorCode: 'client_closed_request',
      status: 499,
    });
    expect(warnings).toEqual([]);
  });

  it('is refused when smaller than the largest body', () => {
    const pool = createStaticPool([deploymentView('llama')]);
    expect(() => createProxyApp({ pool, maxBodyBytes: 2 * MiB, bodyBudgetBytes: 4 * MiB })).toThrow(
      /bodyBudgetBytes \(4194304\) must be at least 4 × maxBodyBytes/,
    );
  });
});

describe('the connection cap', () => {
  it('closes connections past the cap at once; open ones keep working', async () => {
    const { port, url } = await serve({}, undefined, 3);
    const open: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const socket = connect({ port, host: '127.0.0.1' });
      await new Promise((resolve) => socket.once('connect', resolve));
      open.push(socket);
      cleanups.push(() => {
        socket.destroy();
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const extra = connect({ port, host: '127.0.0.1' });
    cleanups.push(() => {
      extra.destroy();
    });
    const closedAt = await new Promise<number>((resolve) =>
      extra.once('close', () => resolve(Date.now())),
    );
    expect(closedAt).toBeGreaterThan(0);
    // An open connection still gets its answer.
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      open[0]!.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes('"object":"list"')) resolve(text);
      });
      open[0]!.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(answer).toMatch(/^HTTP\/1.1 200/);
    // Once one closes, a new connection is served again.
    open[1]!.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await fetch(`${url}/v1/models`, { headers: { connection: 'close' } })).status).toBe(
      200,
    );
  });
});
