/* global process */
// @es/proxy (built dist) with a static pool of one worker: the upstream engine.
import { createProxyApp, startProxyServer } from '../../packages/proxy/dist/index.mjs';

const upstreamPort = Number(process.argv[2]);
const deployment = {
  name: 'bench',
  modelNames: ['bench'],
  model: 'bench',
  engine: 'mock',
  routing: 'least-outstanding',
};
const worker = {
  id: 'bench.0.0',
  deployment: 'bench',
  baseUrl: `http://127.0.0.1:${upstreamPort}`,
  inFlight: 0,
};
const workers = [worker];
const pool = {
  deployments: () => [deployment],
  resolveModel: (model) => (model === 'bench' ? deployment : undefined),
  routable: () => workers,
  waitForRoutable: async () => true,
  reportOutcome: () => {},
};
let completed = 0;
const app = createProxyApp({ pool, onRequestComplete: () => completed++ });
// BENCH_PROXY_WEB_PATH=1 hides Node's request/response from the app, forcing the web-stream
// path (what a plain Hono handler returning `new Response(stream)` would cost).
const fetch =
  process.env.BENCH_PROXY_WEB_PATH === '1' ? (request) => app.fetch(request) : app.fetch;
const server = await startProxyServer({ fetch, keepAliveTimeoutMs: 120_000 });
process.send?.({ port: server.port });
process.on('message', (message) => {
  if (message === 'stats') {
    process.send?.({
      cpu: process.cpuUsage(),
      rss: process.memoryUsage.rss(),
      inFlight: worker.inFlight,
      completed,
    });
  }
});
// A clean exit writes the CPU profile when run with --cpu-prof.
process.on('SIGINT', () => process.exit(0));
