/* global process, Buffer, URL */
// Baseline 2: a raw pipe with the proxy's own HTTP client. node:http in front, undici
// `Pool.dispatch` with keep-alive behind, as @es/proxy does: the body is read whole (the
// proxy must, to route by model), each upstream chunk is written to the client as it comes,
// the upstream connection is paused while the client socket is full and aborted when the
// client leaves. No routing, auth, retries, usage accounting or records: what is left of
// @es/proxy's cost beyond this is its own.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { announce } from './ipc.mjs';

const require = createRequire(new URL('../../packages/proxy/package.json', import.meta.url));
const { Pool } = require('undici');

// undici refuses connection-level headers: they belong to each hop.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'host',
  'te',
  'trailer',
]);
const pick = (headers) => {
  const out = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) out[name] = headers[name];
  return out;
};

const pool = new Pool(process.argv[2], {
  connections: null,
  pipelining: 1,
  keepAliveTimeout: 120_000,
  keepAliveMaxTimeout: 120_000,
});
let inFlight = 0;

const server = createServer((req, res) => {
  inFlight++;
  let controller;
  res.on('close', () => {
    inFlight--;
    if (!res.writableFinished) controller?.abort(new Error('client gone'));
  });
  const parts = [];
  req.on('data', (part) => parts.push(part));
  req.on('end', () => {
    pool.dispatch(
      { path: req.url, method: req.method, headers: pick(req.headers), body: Buffer.concat(parts) },
      {
        onRequestStart(c) {
          controller = c;
          if (res.destroyed) c.abort(new Error('client gone'));
        },
        onResponseStart(_c, status, headers) {
          res.writeHead(status, pick(headers));
        },
        onResponseData(c, chunk) {
          if (!res.write(chunk)) {
            c.pause();
            res.once('drain', () => c.resume());
          }
        },
        onResponseEnd() {
          res.end();
        },
        onResponseError(_c, error) {
          if (res.headersSent) res.destroy(error);
          else res.writeHead(502).end();
        },
      },
    );
  });
});
server.keepAliveTimeout = 120_000;
server.timeout = 0;
server.listen(0, '127.0.0.1', () => announce(server.address().port, () => ({ inFlight })));
