/**
 * Keeps the scheduler's data plane up while the scheduler lives: es-proxy's primary restarts
 * its own workers, but when the primary itself dies (an OOM kill, a SIGKILL, a crash) its
 * workers exit with it (node:cluster) and the client port closes. The scheduler watches the
 * primary and starts another es-proxy on the same port at once, backing off while that
 * fails.
 */
import { backoffDelay } from '@es/protocol';
import {
  alive as isAlive,
  startOrAdoptDataPlane,
  type DataPlane,
  type DataPlaneOptions,
} from './data-plane-process.js';

/** How often the primary is checked (ms). */
const WATCH_EVERY_MS = 250;

/** A {@link DataPlane} that is replaced when it dies; its fields follow the current one. */
export interface SupervisedDataPlane extends DataPlane {
  /** es-proxy supervisors started after the first one died. */
  readonly restarts: number;
  /** Stops watching and leaves it serving (for the next scheduler to re-adopt). */
  release(): void;
}

/**
 * Start or re-adopt the data plane, then watch its primary until `stop`.
 * @example
 * const dataPlane = await superviseDataPlane({ host, port: 8780, processes: 2, logDir,
 *   secretFile, logger });
 * await dataPlane.stop(); // ends it; without stop it is left serving for the next scheduler
 */
export async function superviseDataPlane(
  options: DataPlaneOptions & { alive?: (pid: number) => boolean },
): Promise<SupervisedDataPlane> {
  const log = options.logger;
  const alive = options.alive ?? isAlive;
  let current = await startOrAdoptDataPlane(options);
  let restarts = 0;
  let stopping = false;
  let replacing = false;
  let timer: NodeJS.Timeout | undefined;

  const replace = async () => {
    replacing = true;
    const dead = current;
    log.error(
      { pid: dead.pid, port: dead.port },
      `es-proxy (pid ${dead.pid}) serving port ${dead.port} is gone: starting another on the same port`,
    );
    for (let attempt = 1; !stopping; attempt++) {
      try {
        // The port it served, also when --port 0 chose it: clients know that one.
        current = await startOrAdoptDataPlane({ ...options, port: dead.port });
        restarts++;
        break;
      } catch (error) {
        const waitMs = backoffDelay(attempt, { initialMs: 500, maxMs: 10_000, jitter: 'equal' });
        log.error(
          { err: error, attempt },
          `could not start es-proxy again (${(error as Error).message.split('\n')[0]}); retrying in ${Math.round(waitMs)} ms`,
        );
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
    replacing = false;
  };
  const watch = () => {
    timer = setTimeout(() => {
      if (stopping) return;
      if (!replacing && !alive(current.pid)) void replace().finally(watch);
      else watch();
    }, WATCH_EVERY_MS);
    timer.unref();
  };
  watch();

  return {
    get port() {
      return current.port;
    },
    get pid() {
      return current.pid;
    },
    get processes() {
      return current.processes;
    },
    get adopted() {
      return current.adopted;
    },
    get restarts() {
      return restarts;
    },
    release() {
      stopping = true;
      clearTimeout(timer);
    },
    stop(graceMs) {
      stopping = true;
      clearTimeout(timer);
      return current.stop(graceMs);
    },
  };
}
