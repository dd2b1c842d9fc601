import type { ServerResponse } from 'node:http';

/** Response headers in Node's shape. */
export type OutgoingHeaders = Record<string, string | string[]>;

/**
 * Where the upstream response goes: straight into Node's `ServerResponse` (served by
 * `@hono/node-server`, the fast path) or into a web `ReadableStream` (`app.request()` and
 * other runtimes). Both respect backpressure: `write` returns `false` when the client is
 * behind, and `onDrain` says when to resume the upstream.
 */
export interface ClientSink {
  start(status: number, headers: OutgoingHeaders): void;
  write(chunk: Buffer): boolean;
  onDrain(listener: () => void): void;
  end(): void;
  /** Break the response so the client cannot mistake a truncated body for a whole one. */
  destroy(error: Error): void;
}

/** Sink writing to a Node `ServerResponse`. */
export function createNodeSink(res: ServerResponse): ClientSink {
  return {
    start(status, headers) {
      res.writeHead(status, headers);
    },
    write(chunk) {
      return res.write(chunk);
    },
    onDrain(listener) {
      res.once('drain', listener);
    },
    end() {
      res.end();
    },
    destroy(error) {
      res.destroy(error);
    },
  };
}

/** Sink producing a web `Response`, available once `start` has been called. */
export interface WebSink extends ClientSink {
  response(): Response;
}

/**
 * Sink for the web path.
 * @param onCancel called when the consumer cancels the body (client went away).
 */
export function createWebSink(onCancel: () => void): WebSink {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let drain: (() => void) | undefined;
  let closed = false;
  let response: Response | undefined;
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        const listener = drain;
        drain = undefined;
        listener?.();
      },
      cancel() {
        closed = true;
        onCancel();
      },
    },
    { highWaterMark: 16 },
  );
  return {
    start(status, headers) {
      const list: [string, string][] = [];
      for (const [name, value] of Object.entries(headers)) {
        if (Array.isArray(value)) for (const v of value) list.push([name, v]);
        else list.push([name, value]);
      }
      response = new Response(stream, { status, headers: list });
    },
    write(chunk) {
      if (closed) return true;
      controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return (controller.desiredSize ?? 1) > 0;
    },
    onDrain(listener) {
      drain = listener;
    },
    end() {
      if (closed) return;
      closed = true;
      controller.close();
    },
    destroy(error) {
      if (closed) return;
      closed = true;
      controller.error(error);
    },
    response() {
      if (response === undefined) throw new Error('web sink not started');
      return response;
    },
  };
}
