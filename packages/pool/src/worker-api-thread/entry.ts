/**
 * The worker API's own thread (built to `dist/worker-api-thread.mjs`): its own event loop
 * and listener, so that a worker's heartbeat is answered in milliseconds however busy the
 * scheduler's main thread is with clients. It verifies signatures and nonces here (the nonce
 * cache lives here), answers a heartbeat of a worker in service from the table the main
 * thread sends (and passes it on to be applied), and asks the main thread, which owns the
 * registry, for everything else: registrations, drains, hand-overs, and heartbeats it cannot
 * answer alone (unknown, gone or fenced workers get their exact 404 or 409 from the registry).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { getRequestListener } from '@hono/node-server';
import type { HeartbeatRequest } from '@es/protocol';
import { PoolError } from '../errors.js';
import { createWorkerApi, type WorkerLedgerLike } from '../worker-api.js';
import type {
  ClonedPoolError,
  FromApiThread,
  HeartbeatBatch,
  LedgerMethod,
  ThreadSettings,
  ToApiThread,
} from './messages.js';

const port = parentPort;
if (port === null) throw new Error('worker-api-thread runs as a worker thread only');
const settings = workerData as ThreadSettings;
const send = (message: FromApiThread) => port.postMessage(message);

/** Worker id → restart count, of every worker in service. */
let table = new Map<string, number>();
const waiting = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
let nextId = 1;

const ask = (method: LedgerMethod, ...args: unknown[]): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    send({ type: 'call', id, method, args });
  });

const revive = (error: ClonedPoolError | { message: string }): Error =>
  'code' in error
    ? new PoolError(error.code, error.message, {
        status: error.status,
        ...(error.param === undefined ? {} : { param: error.param }),
        ...(error.jobId === undefined ? {} : { jobId: error.jobId }),
        ...(error.workerId === undefined ? {} : { workerId: error.workerId }),
      })
    : new Error(error.message);

/**
 * Heartbeats answered alone are handed over every {@link BATCH_MS}, in one message: 1,000
 * workers cost the main thread 20 messages a second, not 1,000.
 */
const BATCH_MS = 50;
let batch: HeartbeatBatch = [];
let flushing: NodeJS.Timeout | undefined;
const flush = () => {
  flushing = undefined;
  if (batch.length === 0) return;
  settings.beats.postMessage(batch);
  batch = [];
};

const ledger: WorkerLedgerLike = {
  register: async (request) => {
    const registered = (await ask('register', request)) as Awaited<
      ReturnType<WorkerLedgerLike['register']>
    >;
    // In service from now on: its first heartbeat need not wait for the next table.
    table.set(registered.workerId, request.restartCount);
    return registered;
  },
  heartbeat: (workerId: string, request: HeartbeatRequest) => {
    if (table.get(workerId) === request.restartCount) {
      batch.push([workerId, request]);
      flushing ??= setTimeout(flush, BATCH_MS);
      return;
    }
    return ask('heartbeat', workerId, request) as Promise<void>;
  },
  drain: (workerId, reason) => ask('drain', workerId, reason) as Promise<void>,
  deregister: (workerId, reason) => ask('deregister', workerId, reason) as Promise<void>,
  handOver: (workerIds, reason, stopInMs) =>
    ask('handOver', workerIds, reason, stopInMs) as Promise<string[]>,
};

/** This listener's port, once it listens: requests must be signed for it. */
let audiences: readonly string[] = [];
const app = createWorkerApi(ledger, {
  audiences: () => audiences,
  workerKey: settings.workerKey,
  startedAt: settings.startedAt,
  ...(settings.windowMs === undefined ? {} : { windowMs: settings.windowMs }),
  ...(settings.maxBodyBytes === undefined ? {} : { maxBodyBytes: settings.maxBodyBytes }),
  logger: { warn: (fields, message) => send({ type: 'log', fields, message }) },
});

const server = createServer(getRequestListener(app.fetch));
// A worker keeps its connection between heartbeats; an idle one is closed after a while.
server.keepAliveTimeout = 65_000;
// Past the cap a new connection is closed at once (file descriptors are the process's).
if (settings.maxConnections > 0) server.maxConnections = settings.maxConnections;

port.on('message', (message: ToApiThread) => {
  switch (message.type) {
    case 'table':
      table = new Map(message.workers);
      return;
    case 'reply': {
      const call = waiting.get(message.id);
      if (call === undefined) return;
      waiting.delete(message.id);
      if ('error' in message) call.reject(revive(message.error));
      else call.resolve(message.value);
      return;
    }
    case 'close':
      if (flushing !== undefined) clearTimeout(flushing);
      flush();
      server.close(() => {
        settings.beats.close();
        port.close();
      });
      server.closeAllConnections();
      for (const call of waiting.values()) call.reject(new Error('the scheduler is stopping'));
      waiting.clear();
      return;
  }
});

server.once('error', (error: NodeJS.ErrnoException) => {
  send({ type: 'listen-failed', message: error.message, code: error.code });
  port.close();
});
server.listen(settings.port, settings.host, () => {
  const listening = (server.address() as AddressInfo).port;
  audiences = [String(listening)];
  send({ type: 'listening', port: listening });
});
