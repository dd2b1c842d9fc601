/**
 * The primary of `es-proxy`: a small supervisor that never serves. With `SCHED_NONE` it
 * binds the port once (when the first worker listens) and hands the listening handle to
 * every worker, which accepts connections itself. It respawns a worker that dies (with
 * backoff; the new one listens once it has a routing table), writes the state file once every worker listens and after each respawn, and on
 * SIGTERM/SIGINT lets each worker finish its requests before it exits.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { rmSync } from 'node:fs';
import { backoffDelay, writeDataPlaneState } from '@es/protocol';
import type { Logger } from 'pino';
import type { ProxyFlags } from './flags.js';

/** Exit code when the address cannot be bound (the scheduler reads it). */
export const EXIT_LISTEN_FAILED = 3;

/** Messages a worker sends its primary. */
export type WorkerMessage =
  { type: 'listening'; port: number } | { type: 'listen-failed'; message: string };

/** The environment variable that tells a worker its slot (0 … processes − 1). */
export const SLOT_ENV = 'ES_PROXY_SLOT';
/**
 * Set (to 1) for a respawned worker: it joins a port its siblings serve, so it takes
 * connections only once it has a routing table (a fresh process without one could only
 * answer 503 `no_routing_table`).
 */
export const RESPAWN_ENV = 'ES_PROXY_RESPAWN';

/** Worker's grace to finish in-flight requests on SIGTERM, and the primary's margin. */
export const WORKER_GRACE_MS = 10_000;
const STOP_MARGIN_MS = 5_000;
/** A worker that lived this long before it died is respawned without delay growth. */
const STABLE_MS = 10_000;

interface Slot {
  worker: Worker | undefined;
  listening: boolean;
  startedAt: number;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Run the primary until SIGTERM/SIGINT (exit 0) or a bind failure (exit 3).
 * @example
 * if (cluster.isPrimary) runPrimary(flags, logger);
 */
export function runPrimary(flags: ProxyFlags, logger: Logger): void {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  const startedAt = Date.now();
  const where = `${flags.host}:${flags.port}`;
  const slots: Slot[] = Array.from({ length: flags.processes }, () => ({
    worker: undefined,
    listening: false,
    startedAt: 0,
    failures: 0,
    timer: undefined,
  }));
  let port: number | undefined;
  let serving = false;
  let stopping = false;

  const allListening = () => slots.every((slot) => slot.listening);
  const recordState = () => {
    if (!allListening() || port === undefined) return;
    const workers = slots.map((slot) => slot.worker?.process.pid ?? 0);
    if (!serving) {
      serving = true;
      logger.info(
        { port, processes: flags.processes, workers },
        `serving http://${flags.host}:${port} (/v1 from the routing table) in ${flags.processes} processes`,
      );
    }
    if (flags.stateFile === undefined) return;
    writeDataPlaneState(flags.stateFile, {
      pid: process.pid,
      host: flags.host,
      port,
      processes: flags.processes,
      workers,
      startedAt,
    });
  };

  const fail = (message: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`es-proxy: ${message}\n`);
    for (const slot of slots) {
      clearTimeout(slot.timer);
      slot.worker?.process.kill('SIGKILL');
    }
    process.exit(EXIT_LISTEN_FAILED);
  };

  const fork = (index: number) => {
    const slot = slots[index]!;
    slot.timer = undefined;
    if (stopping) return;
    const respawn = slot.startedAt !== 0;
    const worker = cluster.fork({
      [SLOT_ENV]: String(index),
      ...(respawn ? { [RESPAWN_ENV]: '1' } : {}),
    });
    slot.worker = worker;
    slot.listening = false;
    slot.startedAt = Date.now();
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'listening') {
        port = message.port;
        slot.listening = true;
        recordState();
      } else if (message.type === 'listen-failed') {
        fail(message.message);
      }
    });
    worker.on('exit', (code, signal) => {
      if (slot.worker !== worker) return;
      slot.worker = undefined;
      slot.listening = false;
      if (stopping) {
        if (slots.every((s) => s.worker === undefined)) finish();
        return;
      }
      if (code === EXIT_LISTEN_FAILED) {
        fail(`cannot listen on ${where}: pass another --port or stop what listens there`);
        return;
      }
      const lived = Date.now() - slot.startedAt;
      slot.failures = lived >= STABLE_MS ? 1 : slot.failures + 1;
      const delay = Math.round(backoffDelay(slot.failures, { initialMs: 100, maxMs: 5_000 }));
      logger.warn(
        { pid: worker.process.pid, code, signal, delayMs: delay },
        `worker ${worker.process.pid} died (${signal ?? `exit ${code}`}): respawning in ${delay} ms`,
      );
      slot.timer = setTimeout(() => fork(index), delay);
    });
  };

  const finish = () => {
    if (flags.stateFile !== undefined) rmSync(flags.stateFile, { force: true });
    logger.info('stopped');
    process.exit(0);
  };

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info(
      `${signal}: ending the workers (in-flight requests finish, up to ${WORKER_GRACE_MS / 1000} s)`,
    );
    for (const slot of slots) {
      clearTimeout(slot.timer);
      slot.worker?.process.kill('SIGTERM');
    }
    if (slots.every((s) => s.worker === undefined)) finish();
    // A worker stuck past its grace is ended.
    setTimeout(() => {
      for (const slot of slots) slot.worker?.process.kill('SIGKILL');
    }, WORKER_GRACE_MS + STOP_MARGIN_MS).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < slots.length; i++) fork(i);
}
