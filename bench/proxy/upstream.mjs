/* global process, Buffer, setTimeout, clearTimeout */
// A minimal OpenAI-shaped engine for the proxy benchmark. Streams stamp every chunk with the
// sender's CLOCK_MONOTONIC time (process.hrtime, shared by every process on the machine) so
// the load generator can measure per-chunk latency through each proxy.
//
// Request body fields: `stream`, `max_tokens` (chunks), `bench_interval_ms` (gap between
// chunks), `bench_idle` (send the first chunk, then hold the stream open until the client
// goes away).
import { createServer } from 'node:http';

const completion = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1,
  model: 'bench',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'The quick brown fox jumps over the lazy dog.' },
      finish_reason: 'stop',
    },
  ],
  usage: { prompt_tokens: 12, completion_tokens: 10, total_tokens: 22 },
});

const chunkHead =
  'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}],"t":"';
const chunk = () => `${chunkHead}${process.hrtime.bigint()}"}\n\n`;
const tail =
  'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}\n\ndata: [DONE]\n\n';

const server = createServer((req, res) => {
  const parts = [];
  req.on('data', (part) => parts.push(part));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(parts).toString('utf8'));
    if (!body.stream) {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(completion),
      });
      res.end(completion);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (body.bench_idle) {
      res.write(chunk());
      return;
    }
    const total = body.max_tokens ?? 10;
    const interval = body.bench_interval_ms ?? 0;
    let sent = 0;
    let timer;
    const tick = () => {
      if (res.destroyed) return;
      if (sent < total) {
        res.write(chunk());
        sent++;
        timer = setTimeout(tick, interval);
        return;
      }
      res.end(tail);
    };
    res.on('close', () => clearTimeout(timer));
    tick();
  });
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: server.address().port });
});
