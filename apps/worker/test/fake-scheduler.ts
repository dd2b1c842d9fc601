import { createServer } from 'node:http';
import type { Server } from 'node:http';
import {
  WORKER_API_PREFIX,
  WORKER_SIGNATURE_HEADERS,
  createWorkerRequestVerifier,
  deriveKeys,
  formatWorkerId,
  signWorkerAnswer,
} from '@es/protocol';
import type { RegisterRequest } from '@es/protocol';

/** One request the fake scheduler received. */
export interface SchedulerEvent {
  route: 'register' | 'heartbeat' | 'drain' | 'deregister';
  workerId: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
  /** The request's signature: `ok`, `unsigned`, or why the check refused it. */
  signature: string;
  /** performance.now() on arrival. */
  at: number;
}

/**
 * A real HTTP server speaking the scheduler's side of the worker protocol, recording calls.
 * Given the workers' `secret`, it checks their signatures and signs its answers (a worker
 * with a secret ignores unsigned ones).
 */
export async function startFakeScheduler(heartbeatIntervalMs = 200, secret?: string) {
  const key = secret === undefined ? undefined : deriveKeys(secret).workerKey;
  const verifier =
    key === undefined ? undefined : createWorkerRequestVerifier({ key, startedAt: 0 });
  const events: SchedulerEvent[] = [];
  const listeners: ((event: SchedulerEvent) => void)[] = [];
  const record = (event: SchedulerEvent) => {
    events.push(event);
    for (const listener of listeners) listener(event);
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.now();
      const text = Buffer.concat(chunks).toString();
      const body = JSON.parse(text || '{}') as Record<string, unknown>;
      const path = (req.url ?? '').slice(WORKER_API_PREFIX.length);
      const authorization = req.headers.authorization;
      const check = verifier?.verify({
        method: req.method ?? '',
        path: req.url ?? '',
        body: text,
        header: (name) => req.headers[name] as string | undefined,
      });
      const signature = check === undefined ? 'unsigned' : check.ok ? 'ok' : check.code;
      const answer = (status: number, value: unknown) => {
        const out = JSON.stringify(value);
        const nonce = (req.headers[WORKER_SIGNATURE_HEADERS.nonce] as string | undefined) ?? '';
        res.writeHead(status, {
          'content-type': 'application/json',
          ...(key === undefined
            ? {}
            : {
                [WORKER_SIGNATURE_HEADERS.signature]: signWorkerAnswer(key, {
                  nonce,
                  status,
                  body: out,
                }),
              }),
        });
        res.end(out);
      };
      if (path === '/register') {
        const r = body as unknown as RegisterRequest;
        const workerId = formatWorkerId(r.jobId, r.restartCount, r.index);
        record({ route: 'register', workerId, body, authorization, signature, at });
        answer(200, { workerId, heartbeatIntervalMs });
        return;
      }
      const match = /^\/([^/]+)\/(heartbeat|drain|deregister)$/.exec(path);
      if (!match) {
        res.writeHead(404).end();
        return;
      }
      const route = match[2] as SchedulerEvent['route'];
      const workerId = decodeURIComponent(match[1] ?? '');
      record({ route, workerId, body, authorization, signature, at });
      answer(200, { ok: true });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    events,
    /** Run `listener` synchronously as each request arrives. */
    onEvent: (listener: (event: SchedulerEvent) => void) => listeners.push(listener),
    of: (route: SchedulerEvent['route']) => events.filter((e) => e.route === route),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
