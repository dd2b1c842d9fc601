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
    await until(async () => (await running(engine.url)) === 1, 5_000);
    return { engine, records };
  }

  it('is cut after the idle timeout: the upstream request is aborted, the engine slot freed', async () => {
    const { engine, records } = await stalled(1_000);
    // The stream backs up within a second or two (socket buffers), then 1 s of idleness.
    await until(async () => (await running(engine.url)) === 0, 10_000);
    await until(() => records.length === 1, 5_000);
    expect(records[0]).toMatchObject({ outcome: 'client-abort', stream: true });
  }, 30_000);

  it('without the timeout (0) it holds the engine slot: the test above can fail', async () => {
    const { engine, records } = await stalled(0);
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    expect(await running(engine.url)).toBe(1);
    expect(records).toHaveLength(0);
  }, 30_000);
});

/** Send `headers` and `bytes` of a body declaring `declared` bytes; resolves with the answer. */
function upload(
  port: number,
  declared: number,
  bytes: number,
): {
  response: Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>;
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
  req.write(whole.subarray(0, bytes));
  cleanups.push(() => {
    req.destroy();
  });
  return { response, finish: () => req.end(whole.subarray(bytes)) };
}

describe('the global budget of buffered bodies', () => {
  const MiB = 1024 * 1024;

  /** A budget for 1 MiB of bodies held by a 700 KiB body still arriving; then a second such body. */
  async function twoBodies(bodyBudgetWaitMs: number) {
    const { port } = await serve({ maxBodyBytes: MiB, bodyBudgetBytes: 4 * MiB, bodyBudgetWaitMs });
    const first = upload(port, 700 * 1024, 100);
    await new Promise((resolve) => setTimeout(resolve, 200));
    return { first, second: upload(port, 700 * 1024, 700 * 1024) };
  }

  it('makes a body that does not fit wait, then serves it once room is freed', async () => {
    const { first, second } = await twoBodies(5_000);
    let secondDone = false;
    void second.response.then(() => (secondDone = true));
    await new Promise((resolve) => setTimeout(resolve, 500));
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
