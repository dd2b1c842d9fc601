import type { AddressInfo } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';

/** The fetch callback `@hono/node-server` accepts (a Hono app's `fetch`). */
export type NodeServerFetch = Parameters<typeof createAdaptorServer>[0]['fetch'];

/** Options of {@link startProxyServer}. */
export interface ProxyServerOptions {
  /** The app's fetch handler, e.g. `app.fetch` of the scheduler's app with the proxy mounted. */
  fetch: NodeServerFetch;
  /** Port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Address to bind. Default `127.0.0.1`. */
  hostname?: string;
  /**
   * How long an idle client keep-alive connection is kept. Longer than the usual client
   * pool idle time (the `openai` client's agent), so clients do not race a closing socket.
   * Default 75 000 ms.
   */
  keepAliveTimeoutMs?: number;
  /** Time allowed to receive a request's headers. Default 60 000 ms. */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request (not the response). Default 300 000 ms. */
  requestTimeoutMs?: number;
  /**
   * Open connections at most; a connection past the cap is closed as soon as it is accepted
   * (the open ones keep working). 0 = no cap. Default 4096.
   */
  maxConnections?: number;
  /** Called for each connection closed at accept because of `maxConnections`. */
  onConnectionDropped?: () => void;
  /**
   * Tried on each request before `fetch`: returns `true` when it took the request (e.g. the
   * routing-table watch stream's `node:http` handler).
   */
  handle?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

/** A listening server. */
export interface ProxyServer {
  server: Server;
  port: number;
  /** `http://host:port` */
  url: string;
  /**
   * Stop accepting, end idle keep-alive connections, wait up to `graceMs` (default 10 000)
   * for open responses, then cut whatever is left.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * Serve a Hono fetch handler with `@hono/node-server` and settings fit for long streams:
 * no socket idle timeout (a generation may pause longer than any sane idle limit),
 * keep-alive longer than clients' pools, and a cap on open connections.
 * @example
 * const server = await startProxyServer({ fetch: app.fetch, port: 8780, hostname: '0.0.0.0' });
 */
export async function startProxyServer(options: ProxyServerOptions): Promise<ProxyServer> {
  const keepAliveTimeout = options.keepAliveTimeoutMs ?? 75_000;
  const server = createAdaptorServer({
    fetch: options.fetch,
    serverOptions: {
      keepAliveTimeout,
      // Node requires headersTimeout <= requestTimeout; keep it above keep-alive as well.
      headersTimeout: Math.max(options.headersTimeoutMs ?? 60_000, 1),
      requestTimeout: options.requestTimeoutMs ?? 300_000,
    },
  }) as Server;
  server.timeout = 0;
  const handle = options.handle;
  if (handle !== undefined) {
    const [adaptor] = server.listeners('request') as ((...args: unknown[]) => void)[];
    server.removeAllListeners('request');
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (!handle(req, res)) adaptor!(req, res);
    });
  }
  const maxConnections = options.maxConnections ?? 16_384;
  if (!(Number.isInteger(maxConnections) && maxConnections >= 0)) {
    throw new RangeError(
      `maxConnections must be a whole number >= 0 (0 = no cap), got ${maxConnections}`,
    );
  }
  if (maxConnections > 0) server.maxConnections = maxConnections;
  const onDropped = options.onConnectionDropped;
  if (onDropped !== undefined) server.on('drop', () => onDropped());
  const hostname = options.hostname ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, hostname, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = hostname.includes(':') ? `[${hostname}]` : hostname;
  return {
    server,
    port,
    url: `http://${host}:${port}`,
    close: (graceMs = 10_000) =>
      new Promise<void>((resolve) => {
        // Connections that finish their response after close() turn into idle keep-alive
        // connections the server would otherwise keep until keepAliveTimeout.
        const sweep = setInterval(() => server.closeIdleConnections(), 100);
        // Sockets that never sent a request are neither idle nor active to Node: only the
        // grace deadline ends them.
        const deadline = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearInterval(sweep);
          clearTimeout(deadline);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
