/**
 * One worker process of `es-proxy`: `startDataPlane` of `@es/proxy` on the port the
 * primary holds (with `SCHED_NONE`, `listen(port, host)` in a cluster worker gets the
 * primary's handle); SIGTERM/SIGINT close it gracefully.
 */
import { isEsError } from '@es/protocol';
import { reliabilityHooks, startDataPlane } from '@es/proxy';
import type { Logger } from 'pino';
import type { ProxyFlags } from './flags.js';
import { EXIT_LISTEN_FAILED, RESPAWN_ENV, SLOT_ENV, WORKER_GRACE_MS } from './primary.js';
import type { WorkerMessage } from './primary.js';

const tell = (message: WorkerMessage) => process.send?.(message);

/**
 * Serve until SIGTERM/SIGINT, then let in-flight requests finish and exit 0.
 * @example
 * if (cluster.isWorker) await runWorker(flags, secret, logger);
 */
export async function runWorker(flags: ProxyFlags, secret: string, logger: Logger): Promise<void> {
  const slot = process.env[SLOT_ENV] ?? '0';
  // Reliability runs set these in the scheduler's environment, which es-proxy inherits.
  const hooks = reliabilityHooks();
  if (hooks.planted.length > 0) {
    logger.warn(`FAULTS PLANTED ON PURPOSE (ES_PLANT_FAULTS): ${hooks.planted.join(', ')}`);
  }
  let plane;
  try {
    plane = await startDataPlane({
      secret,
      schedulerUrlFile: flags.schedulerUrlFile,
      ...(flags.schedulerUrl === undefined ? {} : { schedulerUrl: flags.schedulerUrl }),
      host: flags.host,
      port: flags.port,
      ...(flags.id === undefined
        ? {}
        : { id: flags.processes > 1 ? `${flags.id}.${slot}` : flags.id }),
      closeGraceMs: WORKER_GRACE_MS,
      // A respawn joins a port its siblings serve: it listens once it can serve too.
      ...(process.env[RESPAWN_ENV] === '1' ? { firstTableWaitMs: Infinity } : {}),
      logger,
      ...(hooks.journal === undefined ? {} : { journal: hooks.journal }),
      ...(hooks.plantedFaults === undefined ? {} : { plantedFaults: hooks.plantedFaults }),
    });
  } catch (error) {
    if (isEsError(error, 'listen_failed')) {
      tell({ type: 'listen-failed', message: error.message });
      process.exit(EXIT_LISTEN_FAILED);
    }
    throw error;
  }
  tell({ type: 'listening', port: plane.port });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    plane.close().then(
      () => {
        hooks.close();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error while closing');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
