/**
 * Everything a data-plane process does not serve itself (the admin API, `/metrics`, the
 * dashboard, `/cluster_status`, `/workers`, `/api/*`) goes on, as is, to the scheduler's
 * control listener: bodies stream both ways (an upload or a long answer is never held in
 * memory), and a scheduler that cannot be reached is answered with 503
 * `scheduler_unreachable`, while `/v1` keeps being served from the table.
 */
import { Agent, request } from 'node:http';
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { DataPlaneError, sendError } from './errors.js';

// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, not to the request.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'upgrade',
]);

function endToEnd(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** Forwards requests to the scheduler's control listener. */
export interface ControlForwarder {
  /**
   * Forward one request to `controlUrl` (undefined: none known) and stream the answer back;
   * `tableVersion` goes into the 503's message.
   */
  forward(
    incoming: IncomingMessage,
    outgoing: ServerResponse,
    controlUrl: string | undefined,
    tableVersion: number | undefined,
  ): void;
  close(): void;
}

/**
 * Make a forwarder with its own keep-alive connections to the scheduler.
 * @example
 * const control = createControlForwarder();
 * control.forward(req, res, 'http://127.0.0.1:40123', pool.version);
 */
export function createControlForwarder(
  options: { connectTimeoutMs?: number } = {},
): ControlForwarder {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
  const unreachable = (url: string | undefined, version: number | undefined, cause?: unknown) =>
    new DataPlaneError(
      'scheduler_unreachable',
      `The scheduler's control listener${url === undefined ? ' (no URL in the scheduler URL file yet)' : ` at ${url}`} cannot be reached${cause instanceof Error ? ` (${cause.message})` : ''}; this data-plane process keeps serving /v1 from ${version === undefined ? 'no routing table yet' : `routing table version ${version}`}. Retry in a few seconds.`,
      { status: 503, cause },
    );
  return {
    forward(incoming, outgoing, controlUrl, tableVersion) {
      if (controlUrl === undefined) {
        incoming.resume();
        sendError(outgoing, unreachable(undefined, tableVersion));
        return;
      }
      // The request target goes on as a path of the control origin, whatever it looks like:
      // resolved as a URL, `//other-host/x` would send the request to another host.
      const origin = new URL(controlUrl);
      let upstream: ClientRequest;
      try {
        upstream = request({
          protocol: origin.protocol,
          hostname: origin.hostname,
          port: origin.port,
          path: incoming.url?.startsWith('/') === true ? incoming.url : `/${incoming.url ?? ''}`,
          method: incoming.method,
          headers: endToEnd(incoming.rawHeaders) as unknown as Record<string, string>,
          agent,
        });
      } catch (error) {
        incoming.resume();
        sendError(
          outgoing,
          new DataPlaneError(
            'invalid_request',
            `cannot forward ${incoming.method} ${incoming.url}: ${(error as Error).message}`,
            {
              status: 400,
              cause: error,
            },
          ),
        );
        return;
      }
      let answered = false;
      const connectTimer = setTimeout(
        () => upstream.destroy(new Error(`no connection within ${connectTimeoutMs} ms`)),
        connectTimeoutMs,
      );
      upstream.once('socket', (socket) => {
        if (!socket.connecting) clearTimeout(connectTimer);
        else socket.once('connect', () => clearTimeout(connectTimer));
      });
      upstream.on('error', (error) => {
        clearTimeout(connectTimer);
        if (answered) {
          outgoing.destroy(error);
          return;
        }
        incoming.unpipe(upstream);
        incoming.resume();
        sendError(outgoing, unreachable(controlUrl, tableVersion, error));
      });
      upstream.on('response', (res) => {
        answered = true;
        outgoing.writeHead(res.statusCode ?? 502, endToEnd(res.rawHeaders));
        res.pipe(outgoing);
        res.on('error', (error) => outgoing.destroy(error));
      });
      // A client that goes away takes its upstream request with it.
      outgoing.on('close', () => {
        if (!outgoing.writableFinished) upstream.destroy();
      });
      incoming.pipe(upstream);
    },
    close() {
      agent.destroy();
    },
  };
}
