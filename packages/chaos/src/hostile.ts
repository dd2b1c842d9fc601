/**
 * The hostile-input corpus: malformed, oversized, mistyped and forged requests sent over a
 * raw socket (so nothing is fixed up on the way), and the rule every answer must follow.
 */
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { audienceOf, signWorkerRequest } from '@es/protocol';

/** One hostile request. `body` may be a string or a byte count of filler. */
export interface HostileCase {
  name: string;
  /** Raw request bytes, or a builder given the host:port. */
  raw: (host: string) => Buffer;
  /** Statuses that are a correct refusal (always 4xx). */
  expect: number[];
}

/** What came back for one case. */
export interface HostileAnswer {
  name: string;
  /** 0 when the connection closed without an HTTP answer. */
  status: number;
  body: string;
  expect: number[];
}

function request(
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | Buffer = '',
): (host: string) => Buffer {
  return (host) => {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    const lines = [`${method} ${path} HTTP/1.1`, `host: ${host}`, 'connection: close'];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    if (method !== 'GET') lines.push(`content-length: ${bytes.length}`);
    return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), bytes]);
  };
}

const JSON_CT = { 'content-type': 'application/json' };

/**
 * A worker-protocol request signed with `workerKey` when it is built (i.e. sent), for the
 * port it is sent to, as a real worker signs.
 */
function signed(workerKey: string, path: string, body: string): (host: string) => Buffer {
  return (host) => {
    const audience = audienceOf(`http://${host}`);
    const signature = signWorkerRequest(workerKey, { method: 'POST', path, body, audience });
    return request('POST', path, { ...JSON_CT, ...signature }, body)(host);
  };
}

/** The same bytes every time: the first build, replayed. */
function once(build: (host: string) => Buffer): (host: string) => Buffer {
  let built: Buffer | undefined;
  return (host) => (built ??= build(host));
}
const chat = (body: unknown) =>
  request('POST', '/v1/chat/completions', JSON_CT, JSON.stringify(body));

/**
 * The corpus. `workerKey` is the real worker key (`deriveKeys(secret).workerKey`: the cases
 * that must pass authentication are signed with it when sent); `liveWorker` a registered
 * worker id `<job>.<restart>.<index>` whose restart count is at least 1 (for
 * stale-incarnation cases), when one exists.
 * @example
 * const answers = await sendCorpus(url, hostileCorpus({ model: 'mock-model', workerKey }));
 */
export function hostileCorpus(options: {
  model: string;
  workerKey: string;
  liveWorker?: { jobId: string; restartCount: number; index: number };
}): HostileCase[] {
  const { model, workerKey } = options;
  const sign = (path: string, body: string) => signed(workerKey, path, body);
  const unknownHeartbeat = once(
    sign(
      '/api/v1/workers/999999.0.0/heartbeat',
      JSON.stringify({ state: 'ready', restartCount: 0 }),
    ),
  );
  const registration = (overrides: Record<string, unknown>) => ({
    deployment: model,
    jobId: '999999',
    restartCount: 0,
    index: 0,
    host: '127.0.0.1',
    port: 1,
    gpus: [0],
    engine: 'mock',
    model,
    node: 'forged',
    state: 'ready',
    ...overrides,
  });
  const flood: Record<string, string> = {};
  for (let i = 0; i < 4_000; i++) flood[`x-flood-${i}`] = 'y'.repeat(8);
  const cases: HostileCase[] = [
    {
      name: 'malformed JSON',
      raw: request('POST', '/v1/chat/completions', JSON_CT, '{"model": '),
      expect: [400],
    },
    { name: 'JSON array body', raw: chat([1, 2, 3]), expect: [400] },
    { name: 'model of the wrong type', raw: chat({ model: 42, messages: [] }), expect: [400] },
    { name: 'messages of the wrong type', raw: chat({ model, messages: 'hi' }), expect: [400] },
    {
      name: 'stream of the wrong type',
      raw: chat({ model, messages: [{ role: 'user', content: 'x' }], stream: 'yes' }),
      expect: [400],
    },
    {
      name: 'max_tokens of the wrong type',
      raw: chat({ model, messages: [{ role: 'user', content: 'x' }], max_tokens: 'ten' }),
      expect: [400],
    },
    {
      name: 'unknown model',
      raw: chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      expect: [404],
    },
    {
      name: 'text/plain body',
      raw: request('POST', '/v1/chat/completions', { 'content-type': 'text/plain' }, 'hello'),
      expect: [400, 415],
    },
    {
      name: '40 MB body',
      raw: request('POST', '/v1/chat/completions', JSON_CT, Buffer.alloc(40 * 1024 * 1024, 0x20)),
      expect: [413],
    },
    { name: 'header flood (4,000 headers)', raw: request('GET', '/health', flood), expect: [431] },
    {
      name: 'one 100 kB header',
      raw: request('GET', '/health', { 'x-big': 'z'.repeat(100_000) }),
      expect: [431],
    },
    {
      name: 'garbage bytes',
      raw: () => Buffer.from('\x00\x01\x02 NOT HTTP\r\n\r\n'),
      expect: [400],
    },
    {
      name: 'unauthenticated registration',
      raw: request('POST', '/api/v1/workers/register', JSON_CT, JSON.stringify(registration({}))),
      expect: [401],
    },
    {
      name: 'registration signed with another key',
      raw: signed('forged', '/api/v1/workers/register', JSON.stringify(registration({}))),
      expect: [401],
    },
    {
      name: 'registration with wrong types',
      raw: sign(
        '/api/v1/workers/register',
        JSON.stringify(registration({ port: 'eighty', gpus: 'all' })),
      ),
      expect: [400],
    },
    { name: 'heartbeat of an unknown worker', raw: unknownHeartbeat, expect: [404] },
    { name: 'the same heartbeat replayed', raw: unknownHeartbeat, expect: [401] },
    {
      name: 'drain signed with another key',
      raw: signed('forged', '/api/v1/workers/999999.0.0/drain', JSON.stringify({ reason: 'x' })),
      expect: [401],
    },
  ];
  const live = options.liveWorker;
  if (live !== undefined && live.restartCount >= 1) {
    const stale = live.restartCount - 1;
    const staleId = `${live.jobId}.${stale}.${live.index}`;
    const liveId = `${live.jobId}.${live.restartCount}.${live.index}`;
    cases.push(
      {
        name: 'heartbeat from a stale incarnation',
        raw: sign(
          `/api/v1/workers/${staleId}/heartbeat`,
          JSON.stringify({ state: 'ready', restartCount: stale }),
        ),
        expect: [409],
      },
      {
        name: 'registration of a stale incarnation',
        raw: sign(
          '/api/v1/workers/register',
          JSON.stringify(
            registration({ jobId: live.jobId, restartCount: stale, index: live.index }),
          ),
        ),
        expect: [409],
      },
      {
        name: 'unauthenticated drain of a live worker',
        raw: request(
          'POST',
          `/api/v1/workers/${liveId}/drain`,
          JSON_CT,
          JSON.stringify({ reason: 'forged' }),
        ),
        expect: [401],
      },
    );
  }
  return cases;
}

/** Sends one raw request and reads the answer until the server closes (or `timeoutMs`). */
export function sendRaw(
  url: string,
  raw: Buffer,
  timeoutMs = 15_000,
): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const split = text.indexOf('\r\n\r\n');
      resolve({
        status: status ? Number(status[1]) : 0,
        body: split === -1 ? '' : text.slice(split + 4),
      });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', done);
    // The server may answer (413, 431) and close before the whole request is written.
    socket.on('error', () => undefined);
    socket.write(raw);
  });
}

/** Sends every case, one after another. */
export async function sendCorpus(
  url: string,
  cases: readonly HostileCase[],
): Promise<HostileAnswer[]> {
  const host = new URL(url).host;
  const answers: HostileAnswer[] = [];
  for (const c of cases) {
    const { status, body } = await sendRaw(url, c.raw(host));
    answers.push({ name: c.name, status, body, expect: c.expect });
  }
  return answers;
}

/** Strips chunked transfer-encoding framing, if any, from a raw body. */
function unchunk(body: string): string {
  if (!/^[0-9a-f]+\r\n/i.test(body)) return body;
  let out = '';
  let rest = body;
  for (;;) {
    const match = /^([0-9a-f]+)\r\n/i.exec(rest);
    if (!match) return out;
    const size = Number.parseInt(match[1] ?? '0', 16);
    if (size === 0) return out;
    out += rest.slice(match[0].length, match[0].length + size);
    rest = rest.slice(match[0].length + size + 2);
  }
}

/**
 * Answers that break the rule: the status must be one of the case's expected 4xx, and the
 * body either empty (a protocol-level refusal by the HTTP server) or an error object
 * `{"error": {"message": string, "type": string, ...}}`.
 */
export function checkHostileAnswers(answers: readonly HostileAnswer[]): HostileAnswer[] {
  return answers.filter((a) => {
    if (!a.expect.includes(a.status)) return true;
    const body = unchunk(a.body).trim();
    if (body === '') return false;
    try {
      const parsed = JSON.parse(body) as { error?: { message?: unknown; type?: unknown } };
      return typeof parsed.error?.message !== 'string' || typeof parsed.error.type !== 'string';
    } catch {
      return true;
    }
  });
}

/**
 * Slow-loris uploads: `connections` sockets that each send request headers promising a
 * 1 MB body, then one byte every `byteEveryMs`, for `durationMs`. Resolves to how many the
 * server closed or answered by itself before the end (the rest are closed by us).
 */
export async function slowLoris(
  url: string,
  options: { connections: number; durationMs: number; byteEveryMs?: number },
): Promise<{ opened: number; endedByServer: number; statuses: Record<string, number> }> {
  const { hostname, port, host } = new URL(url);
  let endedByServer = 0;
  const statuses: Record<string, number> = {};
  const sockets = Array.from({ length: options.connections }, () => {
    const socket = connect(Number(port), hostname);
    let mine = false;
    socket.on('error', () => undefined);
    socket.once('data', (chunk: Buffer) => {
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.toString('latin1'))?.[1] ?? 'other';
      statuses[status] = (statuses[status] ?? 0) + 1;
    });
    socket.on('close', () => {
      if (!mine) endedByServer++;
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n{`,
    );
    const timer = setInterval(() => socket.write(' '), options.byteEveryMs ?? 1_000);
    return {
      end: () => {
        mine = !socket.destroyed;
        clearInterval(timer);
        socket.destroy();
      },
    };
  });
  await sleep(options.durationMs);
  for (const s of sockets) s.end();
  return { opened: sockets.length, endedByServer, statuses };
}
