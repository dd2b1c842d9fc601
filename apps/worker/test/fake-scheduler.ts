import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { WORKER_API_PREFIX, formatWorkerId } from '@es/protocol';
import type { RegisterRequest } from '@es/protocol';

/** One request the fake scheduler received. */
export interface SchedulerEvent {
  route: 'register' | 'heartbeat' | 'drain' | 'deregister';
  workerId: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
  /** performance.now() on arrival. */
  at: number;
}

/** A real HTTP server speaking the scheduler's side of the worker protocol, recording calls. */
export async function startFakeScheduler(heartbeatIntervalMs = 200) {
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
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
      const path = (req.url ?? '').slice(WORKER_API_PREFIX.length);
      const authorization = req.headers.authorization;
      if (path === '/register') {
        const r = body as unknown as RegisterRequest;
        const workerId = formatWorkerId(r.jobId, r.restartCount, r.index);
        record({ route: 'register', workerId, body, authorization, at });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ workerId, heartbeatIntervalMs }));
        return;
      }
      const match = /^\/([^/]+)\/(heartbeat|drain|deregister)$/.exec(path);
      if (!match) {
        res.writeHead(404).end();
        return;
      }
      const route = match[2] as SchedulerEvent['route'];
      record({ route, workerId: decodeURIComponent(match[1] ?? ''), body, authorization, at });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true }));
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
