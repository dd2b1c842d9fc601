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

/** What a sink pauses while the client is behind: the upstream (undici's dispatch controller). */
export interface Pausable {
  pause(): void;
  resume(): void;
}

/**
 * Backpressure from `sink` to an upstream: call the result with the upstream's controller
 * whenever a write returned `false`. It pauses the upstream until the client drains, with
 * one drain listener however many writes found the client's socket full.
 */
export function pauseUntilDrained(sink: ClientSink): (upstream: Pausable) => void {
  let waiting = false;
  return (upstream) => {
    upstream.pause();
    if (waiting) return;
    waiting = true;
    sink.onDrain(() => {
      waiting = false;
      upstream.resume();
    });
  };
}

/** The client read nothing for longer than the idle timeout. */
export function clientIdle(idleTimeoutMs: number): Error {
  return Object.assign(
    new Error(`The client read nothing of its response for ${idleTimeoutMs / 1000} s.`),
    { code: 'client_idle_timeout' },
  );
}

/**
 * Sink writing to a Node `ServerResponse`. When a write backs up and no `drain` follows
 * within `idleTimeoutMs` (0: never), the response is destroyed: its `close` tells the
 * request the client is gone, which aborts the upstream attempt and frees the engine's slot.
 */
export function createNodeSink(res: ServerResponse, idleTimeoutMs = 0): ClientSink {
  let idle: NodeJS.Timeout | undefined;
  const stopIdle = () => {
    if (idle !== undefined) clearTimeout(idle);
    idle = undefined;
  };
  if (idleTimeoutMs > 0) {
    res.on('drain', stopIdle);
    res.once('close', stopIdle);
  }
  return {
    start(status, headers) {
      res.writeHead(status, headers);
    },
    write(chunk) {
      const flushed = res.write(chunk);
      if (!flushed && idleTimeoutMs > 0 && idle === undefined) {
        idle = setTimeout(() => res.destroy(clientIdle(idleTimeoutMs)), idleTimeoutMs);
        idle.unref();
      }
      return flushed;
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
 * @param onCancel called when the consumer cancels the body (client went away), or when it
 *   pulls nothing for `idleTimeoutMs` (0: never) while the stream is full.
 */
export function createWebSink(onCancel: () => void, idleTimeoutMs = 0): WebSink {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let drain: (() => void) | undefined;
  let closed = false;
  let response: Response | undefined;
  let idle: NodeJS.Timeout | undefined;
  const stopIdle = () => {
    if (idle !== undefined) clearTimeout(idle);
    idle = undefined;
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        stopIdle();
        const listener = drain;
        drain = undefined;
        listener?.();
      },
      cancel() {
        stopIdle();
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
      const room = (controller.desiredSize ?? 1) > 0;
      if (!room && idleTimeoutMs > 0 && idle === undefined) {
        idle = setTimeout(() => {
          idle = undefined;
          if (closed) return;
          closed = true;
          controller.error(clientIdle(idleTimeoutMs));
          onCancel();
        }, idleTimeoutMs);
        idle.unref();
      }
      return room;
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
      stopIdle();
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
