/* global process */
// Bare @es/proxy (built dist) with a static pool of one worker, default options, no client
// auth: `node proxy.mjs [--no-continuation] <upstream url> [model, default bench] [engine API key]`.
// --no-continuation: `continuation: { maxContinuations: 0 }`, so every request goes upstream
// as the client sent it and the answer is relayed byte for byte (the proxy before
// continuation); by default a chat completion goes upstream as a stream with token ids and
// usage, every event is parsed, and a non-streaming answer is assembled by the proxy.
import { parseArgs } from 'node:util';
import { createProxyApp, startProxyServer } from '../../packages/proxy/dist/index.mjs';
import { announce } from './ipc.mjs';

const { values: flags, positionals } = parseArgs({
  options: { 'no-continuation': { type: 'boolean', default: false } },
  allowPositionals: true,
});
const [baseUrl, model = 'bench', upstreamApiKey] = positionals;
const deployment = {
  name: 'bench',
  modelNames: [model],
  model,
  engine: 'mock',
  routing: 'least-outstanding',
  ...(upstreamApiKey === undefined ? {} : { upstreamApiKey }),
};
const worker = { id: 'bench.0.0', deployment: 'bench', baseUrl, inFlight: 0 };
const workers = [worker];
const pool = {
  deployments: () => [deployment],
  resolveModel: (name) => (name === model ? deployment : undefined),
  routable: () => workers,
  waitForRoutable: async () => true,
  reportOutcome: () => {},
};
let completed = 0;
const app = createProxyApp({
  pool,
  onRequestComplete: () => completed++,
  ...(flags['no-continuation'] ? { continuation: { maxContinuations: 0 } } : {}),
});
// BENCH_PROXY_WEB_PATH=1 hides Node's request/response from the app, forcing the web-stream
// path (what a plain Hono handler returning `new Response(stream)` would cost).
const fetch =
  process.env.BENCH_PROXY_WEB_PATH === '1' ? (request) => app.fetch(request) : app.fetch;
const server = await startProxyServer({ fetch, keepAliveTimeoutMs: 120_000 });
announce(server.port, () => ({ inFlight: worker.inFlight, completed }));
// A clean exit writes the CPU profile when run with --cpu-prof.
process.on('SIGINT', () => process.exit(0));
