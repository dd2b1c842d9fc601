/**
 * A stand-in for the scheduler's front door on 127.0.0.1 (port 0): `GET /cluster_status`
 * answers what `status(n)` says on its n-th call; everything else is passed to a real engine
 * (the mock engine). Records when each request was passed on.
 */
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeScheduler {
  url: string;
  /** `/cluster_status` calls so far. */
  statusCalls(): number;
  /** Requests passed to the engine, with the number of status calls made before each. */
  forwarded: { path: string; afterStatusCalls: number }[];
  close(): Promise<void>;
}

export async function startFakeScheduler(
  engineUrl: string,
  status: (call: number) => object,
): Promise<FakeScheduler> {
  let calls = 0;
  const forwarded: FakeScheduler['forwarded'] = [];
  const server = createServer((req, res) => {
    if (req.url === '/cluster_status') {
      calls += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status(calls)));
      return;
    }
    forwarded.push({ path: req.url ?? '/', afterStatusCalls: calls });
    const upstream = request(
      new URL(req.url ?? '/', engineUrl),
      { method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    statusCalls: () => calls,
    forwarded,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A `/cluster_status` body as the scheduler writes it (the fields the tools read). */
export function clusterStatus(ready: number, loading: number): object {
  return {
    model: 'mock-model',
    engine: 'mock',
    total_workers: ready + loading,
    ready_workers: ready,
    loading_workers: loading,
    offline_workers: 0,
    pending_slurm_jobs: loading > 0 ? 1 : 0,
    workers: [],
  };
}
