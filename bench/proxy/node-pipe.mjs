/* global process, URL */
// Baseline 1: the leanest correct reverse proxy node:http allows (keep-alive agent, pipe both
// ways, abort upstream when the client leaves). The proxy's figures are read as ratios
// against this one and undici-pipe.mjs, measured in the same run.
import { Agent, createServer, request } from 'node:http';
import { announce } from './ipc.mjs';

const upstream = new URL(process.argv[2]);
const agent = new Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 60_000 });
let inFlight = 0;

const server = createServer((req, res) => {
  inFlight++;
  const upstreamReq = request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent,
    },
    (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
      upstreamRes.pipe(res);
    },
  );
  upstreamReq.on('error', () => res.destroy());
  res.on('close', () => {
    inFlight--;
    if (!res.writableFinished) upstreamReq.destroy();
  });
  req.pipe(upstreamReq);
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => announce(server.address().port, () => ({ inFlight })));
