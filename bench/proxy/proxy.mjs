/* global process */
// Bare @es/proxy (built dist) with a static pool, default options, no client auth:
// `node proxy.mjs [--no-continuation] [--stall-timeout-ms MS] <upstream url[,url...]> [model,
// default bench] [engine API key]`. Several comma-separated URLs make a pool of as many
// workers (the splice measurement: a generation cut on one is continued on another); a
// static pool never ejects a worker, so one that cut a stream stays routable.
// --no-continuation: `continuation: { maxContinuations: 0 }`, so every request goes upstream
// as the client sent it and the answer is relayed byte for byte (the proxy before
// continuation); by default a chat completion goes upstream as a stream with token ids and
// usage, every event is parsed, and a non-streaming answer is assembled by the proxy.
// --stall-timeout-ms: `continuation.stallTimeoutMs` (default 30 000 ms). Every continuation
// record (`onContinuation`) is kept and handed to the parent with the stats.
import { parseArgs } from 'node:util';
import { createProxyApp, startProxyServer } from '../../packages/proxy/dist/index.mjs';
import { announce } from './ipc.mjs';

const { values: flags, positionals } = parseArgs({
  options: {
    'no-continuation': { type: 'boolean', default: false },
    'stall-timeout-ms': { type: 'string' },
  },
  allowPositionals: true,
});
const [baseUrls, model = 'bench', upstreamApiKey] = positionals;
const deployment = {
  name: 'bench',
  modelNames: [model],
  model,
  engine: 'mock',
  routing: 'least-outstanding',
  ...(upstreamApiKey === undefined ? {} : { upstreamApiKey }),
};
const workers = baseUrls
  .split(',')
  .map((baseUrl, i) => ({ id: `bench.0.${i}`, deployment: 'bench', baseUrl, inFlight: 0 }));
const pool = {
  deployments: () => [deployment],
  resolveModel: (name) => (name === model ? deployment : undefined),
  routable: () => workers,
  waitForRoutable: async () => true,
  reportOutcome: () => {},
};
const continuation = {
  ...(flags['no-continuation'] ? { maxContinuations: 0 } : {}),
  ...(flags['stall-timeout-ms'] === undefined
    ? {}
    : { stallTimeoutMs: Number(flags['stall-timeout-ms']) }),
};
let completed = 0;
const continuations = [];
const app = createProxyApp({
  pool,
  onRequestComplete: () => completed++,
  onContinuation: (record) => continuations.push(record),
  ...(Object.keys(continuation).length > 0 ? { continuation } : {}),
});
// BENCH_PROXY_WEB_PATH=1 hides Node's request/response from the app, forcing the web-stream
// path (what a plain Hono handler returning `new Response(stream)` would cost).
const fetch =
  process.env.BENCH_PROXY_WEB_PATH === '1' ? (request) => app.fetch(request) : app.fetch;
const server = await startProxyServer({ fetch, keepAliveTimeoutMs: 120_000 });
const inFlight = () => workers.reduce((n, w) => n + w.inFlight, 0);
announce(server.port, () => ({ inFlight: inFlight(), completed }), {
  /** The continuation records since the last call. */
  continuations: () => ({ continuations: continuations.splice(0) }),
});
// A clean exit writes the CPU profile when run with --cpu-prof.
process.on('SIGINT', () => process.exit(0));
