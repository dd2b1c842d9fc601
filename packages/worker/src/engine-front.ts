/**
 * The engine front: the only address of an engine instance anyone else sees. The engine
 * itself listens on a Unix socket in a directory only this user can enter (or, for engines
 * that cannot, on loopback); the front listens on the advertised host and port, requires
 * `Authorization: Bearer <engine key>` on every path (vLLM checks its key on `/v1/*` only:
 * `/invocations`, `/tokenize`, `/metrics` ... answer anyone), and forwards what passes,
 * streams included, byte for byte.
 *
 * Once the worker drains ({@link EngineFront.drain}) the front itself refuses every NEW
 * inference request (`POST /v1/*`) with `WORKER_DRAINING` (503 before any byte, header
 * `x-es-draining: 1`): every data-plane process retries it elsewhere, even while the scheduler
 * is unreachable. Requests in flight, and every other path (`/detokenize`, `/metrics`,
 * health), go on as before.
 *
 * The front binds its port itself, before the worker registers it: no other user can take
 * the port between a "free?" check and the engine's bind.
 */
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WORKER_DRAINING, createBearerCheck, openAIErrorBody } from '@es/protocol';

/** Where an engine listens: a Unix socket (preferred) or a loopback TCP port. */
export type EngineEndpoint = { socketPath: string } | { host: string; port: number };

/** Options of {@link createEngineFront}. */
export interface EngineFrontOptions {
  /** Address the front binds (the worker's advertised host). */
  host: string;
  /** The key every request must carry; undefined: none required (no secret: tests only). */
  key: string | undefined;
  /** Where the engine listens now (undefined while it is not running). */
  endpoint(): EngineEndpoint | undefined;
}

/** A running front; see {@link createEngineFront}. */
export interface EngineFront {
  /** The port it listens on (0 before {@link listen}). */
  readonly port: number;
  /**
   * Binds `wanted` (0: any free port); when it is taken or not allowed, any free port.
   * Resolves the port bound.
   */
  listen(wanted: number): Promise<number>;
  /** From now on, refuse every new `POST /v1/*` with `WORKER_DRAINING` (in flight: untouched). */
  drain(): void;
  /**
   * Inference requests (`POST /v1/*`) passed to the engine whose answer has not ended: what
   * a drain waits for, whatever the engine's own metrics say (they lag, and an engine
   * between its scheduler steps may count a streaming request as neither running nor waiting).
   */
  readonly inFlight: number;
  /** Stops accepting and closes every connection (call it once the engine has stopped). */
  close(): Promise<void>;
}

// Headers of one hop only (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const kept: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!HOP_BY_HOP.has(name) && value !== undefined) kept[name] = value;
  }
  return kept;
}

/** An OpenAI-shaped error answer that closes the connection (its body is not read). */
function refuse(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(openAIErrorBody(code, message, status));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
    ...(status === 401 ? { 'www-authenticate': 'Bearer' } : {}),
    ...extra,
  });
  res.end(body);
}

/**
 * Creates the front of one engine instance; nothing listens before {@link EngineFront.listen}.
 * @example
 * const front = createEngineFront({ host: '10.0.0.5', key, endpoint: () => ({ socketPath }) });
 * const port = await front.listen(8001); // registered as http://10.0.0.5:<port>
 */
export function createEngineFront(options: EngineFrontOptions): EngineFront {
  const authorized = options.key === undefined ? undefined : createBearerCheck([options.key]);
  const agent = new Agent({ keepAlive: true, maxFreeSockets: 64 });
  let draining = false;
  let inFlight = 0;

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    if (authorized !== undefined && !authorized(req.headers.authorization)) {
      refuse(res, 401, 'invalid_api_key', 'This engine answers only requests with its key.');
      return;
    }
    if (draining && req.method === 'POST' && req.url?.startsWith('/v1/') === true) {
      refuse(
        res,
        WORKER_DRAINING.status,
        WORKER_DRAINING.code,
        'This worker is draining: it takes no new requests (send it to another worker).',
        { [WORKER_DRAINING.header]: '1' },
      );
      return;
    }
    const endpoint = options.endpoint();
    if (endpoint === undefined) {
      refuse(res, 503, 'engine_not_running', 'The engine is not running (restarting?).');
      return;
    }
    if (req.method === 'POST' && req.url?.startsWith('/v1/') === true) {
      inFlight += 1;
      res.once('close', () => (inFlight -= 1));
    }
    const upstream = httpRequest(
      { ...endpoint, agent, method: req.method, path: req.url, headers: endToEnd(req.headers) },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEnd(answer.headers));
        res.flushHeaders();
        answer.pipe(res);
        // An engine that dies mid-answer: the client's connection is cut too (not ended
        // cleanly), so the proxy sees the failure and can continue the generation.
        answer.once('aborted', () => res.destroy());
        answer.once('error', () => res.destroy());
      },
    );
    upstream.once('error', () => {
      refuse(res, 502, 'engine_unreachable', 'The engine did not answer.');
    });
    // The client left (or the answer was cut): stop the engine's work for it.
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  };

  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, forward);
  // Engines get no upgraded connections (websockets): those sockets are closed.
  server.on('upgrade', (_req, socket) => socket.destroy());
  let port = 0;

  const bind = (wanted: number) =>
    new Promise<number>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.once('error', onError);
      server.listen({ port: wanted, host: options.host, exclusive: true }, () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });

  return {
    get port() {
      return port;
    },
    get inFlight() {
      return inFlight;
    },
    async listen(wanted) {
      try {
        port = await bind(wanted);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (wanted === 0 || (code !== 'EADDRINUSE' && code !== 'EACCES')) throw error;
        port = await bind(0);
      }
      return port;
    },
    drain() {
      draining = true;
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) {
          agent.destroy();
          resolve();
          return;
        }
        server.close(() => {
          agent.destroy();
          resolve();
        });
        server.closeAllConnections();
      });
    },
  };
}
