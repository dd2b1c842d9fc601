/* global process, Buffer, setTimeout, clearTimeout */
// A minimal OpenAI-shaped chat engine for the proxy benchmark, answering as vLLM (>= 0.10.2)
// does: the same content streamed or not (the streamed `delta.content`s concatenate to the
// non-streamed `message.content`), one chunk per token after a role chunk, `finish_reason`
// on the last token's chunk, `return_token_ids` (top-level `prompt_token_ids` in the first
// chunk and in the response, `token_ids` in each choice: fake ids, one per token) and
// `stream_options.include_usage` (a final `choices: []` chunk with usage) honoured. The
// content is `benchAnswer(bench_nonce, max_tokens)` (verify.mjs), so the load generator can
// tell it is the answer to that very request. Every stream chunk with a choice also carries
// `t`, the sender's CLOCK_MONOTONIC time (process.hrtime, shared by every process on the
// machine), a field no OpenAI client knows: a proxy must pass it through, and the load
// generator measures per-chunk latency with it.
//
// Request body fields: `stream`, `max_tokens` (tokens, default 16), `return_token_ids`,
// `stream_options.include_usage`, `bench_nonce`, `bench_interval_ms` (gap between chunks),
// `bench_idle` (send the role chunk and the first token's, or the first `bench_idle_tokens`
// tokens', then hold the stream open until the client goes away). The path is not looked at: every request is a chat completion.
//
// --plant-corrupt: alter one completion in PLANT_EVERY_COMPLETIONS and one stream in
// PLANT_EVERY_STREAMS (a chunk lost, repeated or altered, in turn), to show that the
// benchmark's checks catch it; the counts planted are reported with the stats. A proxy that
// streams a non-streaming request internally (@es/proxy with continuation) gets streams
// from here: their planted defects must reach its client as an altered completion.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { announce } from './ipc.mjs';
import { BENCH_PROMPT_TOKENS, benchAnswer } from './verify.mjs';

const PLANT_EVERY_COMPLETIONS = 997;
const PLANT_EVERY_STREAMS = 97;
const { values: args } = parseArgs({ options: { 'plant-corrupt': { type: 'boolean' } } });
const plant = args['plant-corrupt'] === true;
const planted = { completions: 0, streams: 0 };
let completions = 0;
let streams = 0;

// Fake token ids, consistent with usage: one per prompt token, one per generated token.
const PROMPT_IDS = JSON.stringify(Array.from({ length: BENCH_PROMPT_TOKENS }, (_, i) => 100 + i));
const tokenId = (i) => 1000 + i;
const usage = (n) =>
  `{"prompt_tokens":${BENCH_PROMPT_TOKENS},"completion_tokens":${n},"total_tokens":${BENCH_PROMPT_TOKENS + n}}`;

function completion(nonce, pieces, tokenIds) {
  const ids = tokenIds ? `,"token_ids":${JSON.stringify(pieces.map((_, i) => tokenId(i)))}` : '';
  const promptIds = tokenIds ? `,"prompt_token_ids":${PROMPT_IDS}` : '';
  return `{"id":"chatcmpl-${nonce}","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":${JSON.stringify(pieces.join(''))}},"logprobs":null,"finish_reason":"length"${ids}}],"usage":${usage(pieces.length)}${promptIds}}`;
}
const head = (nonce) =>
  `data: {"id":"chatcmpl-${nonce}","object":"chat.completion.chunk","created":1,"model":"bench",`;
const roleChunk = (nonce, tokenIds) =>
  `${head(nonce)}"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]${tokenIds ? `,"prompt_token_ids":${PROMPT_IDS}` : ''},"t":"${process.hrtime.bigint()}"}\n\n`;
const tokenChunk = (nonce, i, text, last, tokenIds) =>
  `${head(nonce)}"choices":[{"index":0,"delta":{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":${last ? '"length"' : 'null'}${tokenIds ? `,"token_ids":[${tokenId(i)}]` : ''}}],"t":"${process.hrtime.bigint()}"}\n\n`;
const usageChunk = (nonce, n) => `${head(nonce)}"choices":[],"usage":${usage(n)}}\n\n`;

/** The planted defect of this stream, if any: which chunk, and what happens to it. */
function defect(total) {
  streams++;
  if (!plant || streams % PLANT_EVERY_STREAMS !== 0 || total < 3) return undefined;
  planted.streams++;
  return { at: 1, kind: ['lose', 'repeat', 'alter'][planted.streams % 3] };
}

const server = createServer((req, res) => {
  req.socket.used = true;
  const parts = [];
  req.on('data', (part) => parts.push(part));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(parts).toString('utf8'));
    } catch {
      // Not a chat completion (a probe): refused, never a crash.
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"not json"}');
      return;
    }
    const nonce = body.bench_nonce ?? '0';
    const total = body.max_tokens ?? 16;
    const pieces = benchAnswer(nonce, total);
    const tokenIds = body.return_token_ids === true;
    if (!body.stream) {
      if (plant && ++completions % PLANT_EVERY_COMPLETIONS === 0 && total >= 2) {
        planted.completions++;
        pieces[1] += 'x';
      }
      const text = completion(nonce, pieces, tokenIds);
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (body.bench_idle) {
      // The first `bench_idle_tokens` tokens (default 1) in one write, then silence.
      let out = roleChunk(nonce, tokenIds);
      const held = Math.min(body.bench_idle_tokens ?? 1, total - 1);
      for (let i = 0; i < held; i++) out += tokenChunk(nonce, i, pieces[i], false, tokenIds);
      res.write(out);
      return;
    }
    const includeUsage = body.stream_options?.include_usage === true;
    const interval = body.bench_interval_ms ?? 0;
    const fault = defect(total);
    const chunk = (i, text = pieces[i]) => tokenChunk(nonce, i, text, i === total - 1, tokenIds);
    let sent = 0;
    let timer;
    const tick = () => {
      if (res.destroyed) return;
      // The role chunk goes with the first token's, as the first write; without an interval
      // (a non-streaming request streamed by a proxy) every chunk goes in that one write, as
      // an engine that has generated them all at once sends them.
      let out = sent === 0 ? roleChunk(nonce, tokenIds) : '';
      do {
        if (sent !== fault?.at) out += chunk(sent);
        else if (fault.kind === 'repeat') out += chunk(sent) + chunk(sent);
        else if (fault.kind === 'alter') out += chunk(sent, `${pieces[sent]}x`);
        sent++;
      } while (interval === 0 && sent < total);
      if (sent < total) {
        res.write(out);
        timer = setTimeout(tick, interval);
        return;
      }
      res.end(`${out}${includeUsage ? usageChunk(nonce, total) : ''}data: [DONE]\n\n`);
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
