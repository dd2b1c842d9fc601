/* global process, Buffer, setTimeout, clearTimeout */
// A minimal OpenAI-shaped engine for the proxy benchmark. Every response carries the
// request's `bench_nonce` (in its id and content) so the load generator can tell it is the
// answer to that request; stream chunk i says " tok<i>" and is stamped with the sender's
// CLOCK_MONOTONIC time (process.hrtime, shared by every process on the machine) so the load
// generator can measure per-chunk latency through each proxy.
//
// Request body fields: `stream`, `max_tokens` (chunks), `bench_nonce`, `bench_interval_ms`
// (gap between chunks), `bench_idle` (send the first chunk, then hold the stream open until
// the client goes away).
//
// --plant-corrupt: alter one completion in PLANT_EVERY_COMPLETIONS and one stream in
// PLANT_EVERY_STREAMS (a chunk lost, repeated or altered, in turn), to show that the
// benchmark's checks catch it; the counts planted are reported with the stats.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { announce } from './ipc.mjs';

const PLANT_EVERY_COMPLETIONS = 997;
const PLANT_EVERY_STREAMS = 97;
const { values: args } = parseArgs({ options: { 'plant-corrupt': { type: 'boolean' } } });
const plant = args['plant-corrupt'] === true;
const planted = { completions: 0, streams: 0 };
let completions = 0;
let streams = 0;

const completion = (nonce) =>
  `{"id":"chatcmpl-${nonce}","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. ${nonce}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}`;
const chunk = (nonce, i, text = ` tok${i}`) =>
  `data: {"id":"chatcmpl-${nonce}","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":{"content":"${text}"},"finish_reason":null}],"t":"${process.hrtime.bigint()}"}\n\n`;
const tail = (nonce) =>
  `data: {"id":"chatcmpl-${nonce}","object":"chat.completion.chunk","created":1,"model":"bench","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}\n\ndata: [DONE]\n\n`;

/** The planted defect of this stream, if any: which chunk, and what happens to it. */
function defect(total) {
  streams++;
  if (!plant || streams % PLANT_EVERY_STREAMS !== 0 || total < 2) return undefined;
  planted.streams++;
  return { at: 1, kind: ['lose', 'repeat', 'alter'][planted.streams % 3] };
}

const server = createServer((req, res) => {
  req.socket.used = true;
  const parts = [];
  req.on('data', (part) => parts.push(part));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(parts).toString('utf8'));
    const nonce = body.bench_nonce ?? '0';
    if (!body.stream) {
      let text = completion(nonce);
      if (plant && ++completions % PLANT_EVERY_COMPLETIONS === 0) {
        planted.completions++;
        text = text.replace('fox', 'f0x');
      }
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (body.bench_idle) {
      res.write(chunk(nonce, 0));
      return;
    }
    const total = body.max_tokens ?? 10;
    const interval = body.bench_interval_ms ?? 0;
    const fault = defect(total);
    let sent = 0;
    let timer;
    const tick = () => {
      if (res.destroyed) return;
      if (sent < total) {
        if (sent !== fault?.at) res.write(chunk(nonce, sent));
        else if (fault.kind === 'repeat') res.write(chunk(nonce, sent) + chunk(nonce, sent));
        else if (fault.kind === 'alter') res.write(chunk(nonce, sent, ` tok${sent}x`));
        sent++;
        timer = setTimeout(tick, interval);
        return;
      }
      res.end(tail(nonce));
    };
    res.on('close', () => clearTimeout(timer));
    tick();
  });
});
server.keepAliveTimeout = 120_000;
// undici opens a new connection for each request it aborts (when a client drops a stream
// through an undici-based proxy) and never uses it: close such connections after
// UNUSED_CONNECTION_MS, as an engine's keep-alive timeout would, so that the idle-stream
// phase of one target does not leave 10,000 sockets behind for the next one.
const UNUSED_CONNECTION_MS = 2000;
let connections = 0;
server.on('connection', (socket) => {
  connections++;
  socket.once('close', () => connections--);
  setTimeout(() => socket.used || socket.destroy(), UNUSED_CONNECTION_MS).unref();
});
server.listen(0, '127.0.0.1', () =>
  announce(server.address().port, () => ({ planted, connections })),
);
