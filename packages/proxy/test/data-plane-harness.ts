/**
 * A stand-in scheduler for data-plane tests, on real sockets of 127.0.0.1: the registry of
 * `@es/pool` served by `createRoutingWatchServer`, the report route checked as the
 * scheduler checks it (`createWorkerRequestVerifier` with the data-plane key), and a few
 * control paths (`/metrics`, an echo that streams a body back).
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DATA_PLANE_ROUTES,
  ROUTING_WATCH_ROUTE,
  createWorkerRequestVerifier,
  deriveEngineKey,
  deriveKeys,
  writeSchedulerUrl,
} from '@es/protocol';
import type { DataPlaneReport, DataPlaneSettings } from '@es/protocol';
import { createMockEngine } from '@es/mock-engine';
import { createRegistry, createRoutingWatchServer } from '@es/pool';
import type { Registry } from '@es/pool';
import { registerReadyWorker } from './registry-worker.js';
import { SETTINGS } from './watch-settings.js';

export const SECRET = 'data-plane-test-secret-0123456789abcdef';
export const { dataPlaneKey: DATA_PLANE_KEY } = deriveKeys(SECRET);
export const MODEL = '/models/qwen';

export { SETTINGS };

export type Cleanups = (() => void | Promise<void>)[];

/** A registry with deployment `qwen` (model {@link MODEL}). */
export function newRegistry(): Registry {
  return createRegistry({
    deployments: [
      {
        name: 'qwen',
        model: MODEL,
        engine: 'mock',
        tensorParallelSize: 1,
        gpusPerNode: 1,
        maxNodes: 4,
      },
    ],
    upstreamKey: ({ jobId }) => deriveEngineKey(SECRET, jobId),
  });
}

/** A mock engine for job `jobId` (its engine key required), registered ready. */
export async function readyEngine(
  registry: Registry,
  jobId: string,
  cleanups: Cleanups,
  options: { tokensPerSecond?: number } = {},
): Promise<string> {
  const engine = createMockEngine({
    servedModelName: MODEL,
    apiKey: deriveEngineKey(SECRET, jobId),
    ...options,
  });
  const url = await engine.listen(0, '127.0.0.1');
  cleanups.push(() => engine.close());
  return registerReadyWorker(registry, jobId, Number(new URL(url).port));
}

/** A stand-in scheduler's control listener. */
export interface FakeScheduler {
  url: string;
  port: number;
  server: Server;
  /** The reports accepted, in order. */
  reports: DataPlaneReport[];
  /** Reports refused by the verifier. */
  refused: number;
  /** Stop listening and drop every connection (an outage). */
  close(): Promise<void>;
  /**
   * Hold new watch subscriptions unanswered (a slow scheduler) until the returned release
   * is called; then they are answered in order.
   */
  holdWatch(): () => void;
}

/** Serve the watch stream, reports and control paths of `registry` on 127.0.0.1. */
export async function startFakeScheduler(
  registry: Registry,
  cleanups: Cleanups,
  settings: DataPlaneSettings = SETTINGS,
  port = 0,
): Promise<FakeScheduler> {
  const watch = createRoutingWatchServer({
    pool: registry,
    key: DATA_PLANE_KEY,
    heartbeatMs: 200,
    dataPlane: () => settings,
  });
  const verifier = createWorkerRequestVerifier({ key: DATA_PLANE_KEY });
  const reports: DataPlaneReport[] = [];
  const fake = { reports, refused: 0 } as FakeScheduler;
  let held: [IncomingMessage, ServerResponse][] | undefined;
  const server = createServer((req, res) => {
    if (held !== undefined && (req.url ?? '').split('?')[0] === ROUTING_WATCH_ROUTE.path) {
      held.push([req, res]);
      return;
    }
    if (watch.handle(req, res)) return;
    const path = req.url ?? '/';
    if (req.method === 'POST' && path === DATA_PLANE_ROUTES.report.path) {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const check = verifier.verify({
          method: 'POST',
          path,
          body,
          header: (name) => req.headers[name] as string | undefined,
        });
        if (!check.ok) {
          fake.refused += 1;
          res.writeHead(401).end();
          return;
        }
        reports.push(JSON.parse(body) as DataPlaneReport);
        res.writeHead(204).end();
      });
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('es_fake_metric 1\n');
      return;
    }
    if (path === '/api/v1/echo') {
      // Streams the body back as it arrives, with its size in a trailer-free header.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-echo': 'yes' });
      req.pipe(res);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  const close = async () => {
    watch.close();
    if (!server.listening) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };
  cleanups.push(close);
  const holdWatch = () => {
    held ??= [];
    return () => {
      const waiting = held ?? [];
      held = undefined;
      for (const [req, res] of waiting) if (!res.destroyed) watch.handle(req, res);
    };
  };
  return Object.assign(fake, {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    server,
    close,
    holdWatch,
  });
}

/** A fresh directory's `control-url` path (the file is not written). */
export function urlFilePath(cleanups: Cleanups): string {
  const dir = mkdtempSync(join(tmpdir(), 'es-dp-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'control-url');
}

export { writeSchedulerUrl };
