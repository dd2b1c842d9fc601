import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { RegisterRequest } from '@es/protocol';
import type { DeploymentConfig } from '../src/index.js';

export function deployment(name = 'm', extra: Partial<DeploymentConfig> = {}): DeploymentConfig {
  return {
    name,
    model: `/models/${name}`,
    engine: 'mock',
    tensorParallelSize: 4,
    gpusPerNode: 8,
    maxNodes: 3,
    ...extra,
  };
}

export function registration(
  jobId: string,
  index = 0,
  extra: Partial<RegisterRequest> = {},
): RegisterRequest {
  return {
    deployment: 'm',
    jobId,
    restartCount: 0,
    index,
    host: '127.0.0.1',
    port: 9000 + index,
    gpus: [index * 4, index * 4 + 1, index * 4 + 2, index * 4 + 3],
    engine: 'mock',
    model: '/models/m',
    node: 'node-1',
    state: 'loading',
    ...extra,
  };
}

/** A settable clock. */
export function manualClock(start = 1_000_000) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
    set: (ms: number) => {
      t = ms;
    },
  };
}

/**
 * Serves `fetch` (a Hono app's) on 127.0.0.1, any free port: its base URL and a close.
 * With the scheduler's keep-alive (startProxyServer): with Node's 5 s default, a socket
 * fetch() reuses after the event loop stalled that long (a busy machine) is closed under
 * the request, and the call fails with ECONNRESET.
 */
export async function serveOnLoopback(
  fetch: (request: Request) => Response | Promise<Response>,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve(
      { fetch, hostname: '127.0.0.1', port: 0, serverOptions: { keepAliveTimeout: 75_000 } },
      () => resolve(s),
    );
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
