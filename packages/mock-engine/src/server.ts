/**
 * The mock engine's lifecycle: the node:http server and its routes (`routes.ts`), loading
 * (`loadDelay`), listening on a port or a Unix socket, graceful shutdown as uvicorn does it,
 * and close.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createEngineState } from './engine-state.js';
import { MockEngineError } from './errors.js';
import { sendError } from './http-io.js';
import type { MockEngineStats } from './metrics.js';
import type { MockEngineOptions } from './options.js';
import type { RequestLogRecord } from './request-log.js';
import { HttpError } from './requests.js';
import { route } from './routes.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** A running (or loading) mock engine. */
export interface MockEngine {
  /** `http://host:port` once `listen()` resolved; throws `not_listening` before. */
  readonly url: string;
  /** The underlying node:http server. */
  readonly server: Server;
  /** Wait `loadDelay`, then listen (default port 0, host 127.0.0.1); resolves to the URL. */
  listen(port?: number, host?: string): Promise<string>;
  /**
   * Like vLLM's `--uds`: wait `loadDelay`, then listen on the Unix socket `path` (which must
   * not exist); resolves to `unix:<path>`.
   */
  listenUnix(path: string): Promise<string>;
  /** Stop generating, drop every connection and close the port. */
  close(): Promise<void>;
  /**
   * Graceful shutdown, as uvicorn/vLLM do on SIGTERM: close the port, answer new requests on
   * kept-alive connections 503 (`Connection: close`), let the requests in flight (streams
   * included) finish for up to `timeoutMs` (default 30000), then {@link MockEngine.close}.
   */
  shutdown(timeoutMs?: number): Promise<void>;
  /** Current counters and gauges. */
  stats(): MockEngineStats;
  /** The inference requests received so far, oldest first (the latest 100,000). */
  requestLog(): readonly RequestLogRecord[];
}

/**
 * Create an OpenAI-compatible engine that behaves like vLLM on the wire, with knobs for
 * speed and failure injection.
 * @example
 * const engine = createMockEngine({ model: 'mock', tokensPerSecond: 200 });
 * const url = await engine.listen(0, '127.0.0.1');
 * // ... point an OpenAI client at `${url}/v1`
 * await engine.close();
 */
export function createMockEngine(options: MockEngineOptions = {}): MockEngine {
  const state = createEngineState(options, () => {
    void close();
  });
  const { opts } = state;
  let url: string | undefined;
  let closing = false;
  // Graceful shutdown: requests being answered, and who waits for them to reach zero.
  let draining = false;
  let inFlight = 0;
  const idleWaiters: (() => void)[] = [];

  const server = createServer((req, res) => {
    if (draining) {
      // What uvicorn does with a request on a kept-alive connection once it is shutting down.
      res.setHeader('connection', 'close');
      sendError(res, new HttpError(503, 'the engine is shutting down', 'ServiceUnavailableError'));
      return;
    }
    inFlight++;
    res.once('close', () => {
      inFlight--;
      if (inFlight === 0) for (const wake of idleWaiters.splice(0)) wake();
    });
    route(state, req, res).catch((error: unknown) => {
      if (error instanceof HttpError) sendError(res, error);
      else sendError(res, new HttpError(500, String(error), 'InternalServerError'));
    });
  });
  // Streams may last minutes; node's default request timeout would cut them.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 30_000;

  async function close(): Promise<void> {
    closing = true;
    state.batch.clear();
    server.closeAllConnections();
    if (!server.listening) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async function shutdown(timeoutMs = 30_000): Promise<void> {
    if (!draining) {
      draining = true;
      // Stop accepting; connections with nothing in flight go now, the others after their answer.
      if (server.listening) server.close();
      server.closeIdleConnections();
    }
    if (inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        idleWaiters.push(resolve);
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    await close();
  }

  /** Waits `loadDelay` (loading weights), then binds. */
  async function bind(where: { port: number; host: string } | { path: string }): Promise<void> {
    if (opts.loadDelay > 0) await sleep(opts.loadDelay);
    if (closing) throw new MockEngineError('not_listening', 'closed while loading');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(where, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  return {
    get url() {
      if (url === undefined) {
        throw new MockEngineError('not_listening', 'the mock engine is not listening yet');
      }
      return url;
    },
    server,
    async listen(port = 0, host = '127.0.0.1') {
      await bind({ port, host });
      const address = server.address();
      const actual = typeof address === 'object' && address ? address.port : port;
      url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}`;
      return url;
    },
    async listenUnix(path) {
      await bind({ path });
      url = `unix:${path}`;
      return url;
    },
    close,
    shutdown,
    stats: state.stats,
    requestLog: () => [...state.log.records],
  };
}
