/* global process, Buffer, URL */
// What feeds the benchmark's es-proxy processes their routing table: a real `@es/pool`
// registry holding the engines the other targets stand in front of, each registered and
// reported ready as a worker's first register and heartbeat do, served by
// `createRoutingWatchServer` (the very handler the scheduler mounts), with the report route
// checked by the data-plane key as the scheduler checks it. Its own process, so its CPU is
// not counted as the data plane's. `node watch-server.mjs <spec json>`, where the spec is
// `{ secretFile, workers: [{ model, url, jobId }] }`: the es-proxy processes derive each
// engine's key from the same secret and job id, as they do behind a scheduler.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRegistry, createRoutingWatchServer } from '../../packages/pool/dist/index.mjs';
import {
  DATA_PLANE_ROUTES,
  createWorkerRequestVerifier,
  deriveEngineKey,
  deriveKeys,
} from '../../packages/protocol/dist/index.mjs';
import { registerReadyWorker } from '../../packages/testkit/dist/index.mjs';
import { announce } from './ipc.mjs';

const spec = JSON.parse(process.argv[2]);
const secret = readFileSync(spec.secretFile, 'utf8');
const { dataPlaneKey: key } = deriveKeys(secret);

/**
 * The scheduler's defaults (packages/scheduler/src/settings.ts `DEFAULTS`, no client key),
 * as `dataPlaneSettings` turns them into the snapshot's settings.
 */
const settings = {
  clientKeyHashes: [],
  corsOrigins: [],
  exposeSelectedEndpoint: false,
  maxContinuations: 3,
  stallTimeoutMs: 30_000,
  bodyBudgetBytes: 128 * 1024 * 1024,
  clientIdleTimeoutMs: 60_000,
  maxConnections: 16_384,
};

const models = [...new Set(spec.workers.map((w) => w.model))];
const registry = createRegistry({
  deployments: models.map((model) => ({
    name: model,
    model,
    engine: 'mock',
    tensorParallelSize: 1,
    gpusPerNode: 1,
    maxNodes: 1,
  })),
  upstreamKey: ({ jobId }) => deriveEngineKey(secret, jobId),
});
// Registered and reported ready as a worker's first register and heartbeat do.
for (const w of spec.workers)
  registerReadyWorker(registry, w.jobId, Number(new URL(w.url).port), w.model);

const watch = createRoutingWatchServer({ pool: registry, key, dataPlane: () => settings });
const verifier = createWorkerRequestVerifier({ key });
const counts = { reports: 0, refusedReports: 0 };
const server = createServer((req, res) => {
  if (watch.handle(req, res)) return;
  if (req.method === 'POST' && req.url === DATA_PLANE_ROUTES.report.path) {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const check = verifier.verify({
        method: 'POST',
        path: req.url,
        body,
        header: (name) => req.headers[name],
      });
      if (check.ok) counts.reports++;
      else counts.refusedReports++;
      res.writeHead(check.ok ? 204 : 401).end();
    });
    return;
  }
  res.writeHead(404).end();
});
server.listen(0, '127.0.0.1', () => {
  announce(server.address().port, () => ({ ...counts, subscribers: watch.subscribers }));
});
process.on('SIGINT', () => process.exit(0));
