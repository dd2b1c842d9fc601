import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * How the fake engine answers: `ok`, a fixed HTTP `status`, `reset` (destroy the socket
 * before answering), `die-mid-stream` (destroy after `chunksBeforeDeath` SSE chunks) or
 * `hang` (send nothing).
 */
export type FakeMode =
  | { kind: 'ok' }
  | { kind: 'status'; status: number }
  | { kind: 'reset' }
  | { kind: 'die-mid-stream'; chunksBeforeDeath: number }
  | { kind: 'hang' }
  | { kind: 'stall-mid-stream'; chunksBeforeStall: number }
  | { kind: 'flood'; bytes: number };

export interface SeenRequest {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface FakeEngine {
  url: string;
  name: string;
  mode: FakeMode;
  /** Milliseconds between stream chunks. */
  chunkIntervalMs: number;
  /** Chunks per streamed answer. */
  chunks: number;
  seen: SeenRequest[];
  /** Requests whose client (the proxy) went away before the answer ended. */
  cancelled: number;
  /** Bytes the flood mode has handed to its socket so far (without waiting in its buffer). */
  flooded: () => number;
  /** Resolves on the next cancellation. */
  nextCancel(): Promise<void>;
  close(): Promise<void>;
}

/** A tiny OpenAI-compatible engine on 127.0.0.1 with failure modes for proxy tests. */
export async function startFakeEngine(name: string): Promise<FakeEngine> {
  let cancelWaiters: (() => void)[] = [];
  const engine: FakeEngine = {
    url: '',
    name,
    mode: { kind: 'ok' },
    chunkIntervalMs: 5,
    chunks: 3,
    seen: [],
    cancelled: 0,
    nextCancel: () => new Promise((resolve) => cancelWaiters.push(resolve)),
    flooded: () => 0,
    close: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(parts).toString('utf8');
      engine.seen.push({ path: req.url ?? '', headers: req.headers, body });
      const mode = engine.mode;
      if (mode.kind === 'reset') return void req.socket.destroy();
      if (mode.kind === 'status') {
        res.writeHead(mode.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `fake ${mode.status}`, code: mode.status } }));
        return;
      }
      let finished = false;
      res.on('close', () => {
        if (finished) return;
        engine.cancelled++;
        const waiters = cancelWaiters;
        cancelWaiters = [];
        for (const waiter of waiters) waiter();
      });
      if (mode.kind === 'hang') return;
      if (mode.kind === 'flood') {
        // Write as fast as the proxy lets us: `write` returning false is its backpressure.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const block = Buffer.alloc(64 * 1024, 'x');
        let written = 0;
        engine.flooded = () => written - res.writableLength;
        const pump = () => {
          while (written < mode.bytes) {
            written += block.length;
            if (!res.write(block)) return void res.once('drain', pump);
          }
          finished = true;
          res.end();
        };
        pump();
        return;
      }
      const parsed = JSON.parse(body) as { stream?: boolean; model?: string };
      const model = parsed.model ?? 'unknown';
      const usage = {
        prompt_tokens: 7,
        completion_tokens: engine.chunks,
        total_tokens: 7 + engine.chunks,
      };
      if (req.url === '/v1/embeddings') {
        finished = true;
        const vector = [0.1, 0.2, 0.3];
        const base64 = (parsed as { encoding_format?: string }).encoding_format === 'base64';
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            object: 'list',
            model,
            data: [
              {
                object: 'embedding',
                index: 0,
                embedding: base64
                  ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
                  : vector,
              },
            ],
            usage: { prompt_tokens: 7, total_tokens: 7 },
          }),
        );
        return;
      }
      const chat = req.url === '/v1/chat/completions';
      const choice = (text: string, finish: string | null) =>
        chat
          ? { index: 0, delta: { content: text }, finish_reason: finish }
          : { index: 0, text, finish_reason: finish };
      if (!parsed.stream) {
        finished = true;
        res.writeHead(200, { 'content-type': 'application/json', 'x-engine': name });
        const text = Array.from({ length: engine.chunks }, (_, i) => `t${i} `).join('');
        res.end(
          JSON.stringify({
            id: `cmpl-${name}`,
            object: chat ? 'chat.completion' : 'text_completion',
            created: 1,
            model,
            choices: [
              chat
                ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }
                : { index: 0, text, finish_reason: 'stop' },
            ],
            usage,
          }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-engine': name });
      const object = chat ? 'chat.completion.chunk' : 'text_completion';
      let sent = 0;
      const tick = () => {
        if (res.destroyed) return;
        if (mode.kind === 'stall-mid-stream' && sent === mode.chunksBeforeStall) return;
        if (mode.kind === 'die-mid-stream' && sent === mode.chunksBeforeDeath) {
          req.socket.destroy();
          return;
        }
        if (sent < engine.chunks) {
          const chunk = {
            id: `cmpl-${name}`,
            object,
            created: 1,
            model,
            choices: [choice(`t${sent} `, null)],
          };
          res.write(`data: ${JSON.stringify(chunk)}\n\n`);
          sent++;
          setTimeout(tick, engine.chunkIntervalMs);
          return;
        }
        const last = { id: `cmpl-${name}`, object, created: 1, model, choices: [], usage };
        res.write(`data: ${JSON.stringify(last)}\n\ndata: [DONE]\n\n`);
        finished = true;
        res.end();
      };
      tick();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  engine.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  engine.close = () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return engine;
}
