/**
 * The worker protocol served from a thread of its own, on a listener of its own: the
 * scheduler's main thread (the proxy, the admin API, the reconciler) can be saturated by a
 * client flood without a healthy worker's heartbeat waiting for it. The registry stays on the
 * main thread; see `worker-api-thread/entry.ts` for what the API's thread answers alone.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';
import { PoolError } from './errors.js';
import type { JobLedger, PoolEventFeed, WorkerDirectory, WorkerLedger } from './roles.js';
import type { WorkerApiOptions } from './worker-api.js';
import type {
  FromApiThread,
  HeartbeatBatch,
  ThreadSettings,
  ToApiThread,
} from './worker-api-thread/messages.js';

/** The built thread: the same file whether this module runs from `src/` or `dist/`. */
const THREAD_SCRIPT = fileURLToPath(new URL('../dist/worker-api-thread.mjs', import.meta.url));

/** What the API's thread needs of the registry. */
export type WorkerApiPool = WorkerLedger &
  WorkerDirectory &
  Pick<JobLedger, 'job'> &
  Pick<PoolEventFeed, 'on'>;

/** Options of {@link startWorkerApiThread}. */
export interface WorkerApiThreadOptions extends Pick<
  WorkerApiOptions,
  'workerKey' | 'windowMs' | 'maxBodyBytes' | 'logger'
> {
  /** Address to listen on. */
  host: string;
  /** Port to listen on (0: any free port). */
  port: number;
  /** See {@link WorkerApiOptions.startedAt} (default: now). */
  startedAt?: number;
  /** Open connections at most; past it a new one is closed at once (default 16384; 0: no cap). */
  maxConnections?: number;
  /** Where the thread's own failures are logged. */
  onError?: (error: Error) => void;
}

/** A running worker API thread. */
export interface WorkerApiThread {
  /** The port it listens on. */
  port: number;
  /**
   * Apply, now, the heartbeats the thread answered and handed over but this thread has not
   * handled yet (a busy event loop runs its timers first): call it before judging heartbeat
   * timeouts, so a worker that was heard is not taken for silent.
   */
  receivePending(): void;
  /** Stop listening and end the thread. */
  close(): Promise<void>;
}

/**
 * Serve the worker protocol for `pool` from a worker thread listening on `host:port`.
 * Resolves once it listens; rejects (EADDRINUSE, ...) when it cannot.
 * @example
 * const api = await startWorkerApiThread(registry, { workerKey, host: '0.0.0.0', port: 0 });
 * console.log(`workers report to port ${api.port}`);
 */
export async function startWorkerApiThread(
  pool: WorkerApiPool,
  options: WorkerApiThreadOptions,
): Promise<WorkerApiThread> {
  if (!existsSync(THREAD_SCRIPT)) {
    throw new PoolError(
      'invalid_config',
      `the worker API's thread is not built (${THREAD_SCRIPT} is missing): run pnpm build`,
      { param: 'workerApiThread' },
    );
  }
  const beats = new MessageChannel();
  const settings: ThreadSettings = {
    beats: beats.port2,
    workerKey: options.workerKey,
    host: options.host,
    port: options.port,
    startedAt: options.startedAt ?? Date.now(),
    maxConnections: options.maxConnections ?? 16_384,
    ...(options.windowMs === undefined ? {} : { windowMs: options.windowMs }),
    ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
  };
  // Not the host's flags (a test runner's loaders, --input-type): the thread is plain built code.
  const thread = new Worker(THREAD_SCRIPT, {
    workerData: settings,
    transferList: [beats.port2],
    execArgv: [],
  });
  const post = (message: ToApiThread) => thread.postMessage(message);

  // The table of workers in service, sent again at most every 100 ms after lifecycle
  // events (a burst of 1,024 registrations makes a few tables, not 1,024), and every second
  // in case an event was missed. A registration adds its worker on the thread at once.
  let pending: NodeJS.Timeout | undefined;
  const sendTable = () => {
    pending = undefined;
    const workers: [string, number][] = [];
    for (const w of pool.workers()) {
      if (w.state === 'gone') continue;
      // An older incarnation than the job's newest is fenced: the registry answers it.
      const job = pool.job(w.jobId);
      if (job !== undefined && job.restartCount !== w.restartCount) continue;
      workers.push([w.id, w.restartCount]);
    }
    post({ type: 'table', workers });
  };
  const tableSoon = () => {
    pending ??= setTimeout(sendTable, 100);
  };
  const unsubscribe = pool.on(tableSoon);
  const refresh = setInterval(tableSoon, 1_000);
  refresh.unref();

  const reply = (id: number, run: () => unknown) => {
    try {
      const value = run();
      post({ type: 'reply', id, value });
    } catch (error) {
      post({
        type: 'reply',
        id,
        error:
          error instanceof PoolError
            ? {
                code: error.code,
                message: error.message,
                status: error.status,
                param: error.param,
                jobId: error.jobId,
                workerId: error.workerId,
              }
            : { message: String((error as Error)?.message ?? error) },
      });
    }
    // A drain, deregistration or hand-over may have changed the table.
    tableSoon();
  };

  const apply = (batch: HeartbeatBatch) => {
    for (const [workerId, request] of batch) {
      // Answered already; a worker that left the table meanwhile is the registry's to judge
      // (its next heartbeat gets the 404 or 409).
      try {
        pool.heartbeat(workerId, request);
      } catch {
        tableSoon();
      }
    }
  };
  beats.port1.on('message', apply);
  const receivePending = () => {
    for (
      let got = receiveMessageOnPort(beats.port1);
      got;
      got = receiveMessageOnPort(beats.port1)
    ) {
      apply(got.message as HeartbeatBatch);
    }
  };

  thread.on('message', (message: FromApiThread) => {
    switch (message.type) {
      case 'call': {
        const { id, method, args } = message;
        reply(id, () => (pool[method] as (...a: unknown[]) => unknown)(...args));
        return;
      }
      case 'log':
        options.logger?.warn(message.fields, message.message);
        return;
      default:
        return;
    }
  });
  thread.on('error', (error) => options.onError?.(error));

  const port = await new Promise<number>((resolve, reject) => {
    const onMessage = (message: FromApiThread) => {
      if (message.type === 'listening') {
        thread.off('message', onMessage);
        resolve(message.port);
      } else if (message.type === 'listen-failed') {
        thread.off('message', onMessage);
        reject(
          Object.assign(new Error(message.message), message.code ? { code: message.code } : {}),
        );
      }
    };
    thread.on('message', onMessage);
    thread.once('exit', (code) => reject(new Error(`the worker API's thread exited (${code})`)));
  }).catch(async (error: unknown) => {
    unsubscribe();
    clearInterval(refresh);
    beats.port1.close();
    await thread.terminate();
    throw error;
  });
  sendTable();

  let closing: Promise<void> | undefined;
  return {
    port,
    receivePending,
    close: () =>
      (closing ??= (async () => {
        unsubscribe();
        clearInterval(refresh);
        if (pending !== undefined) clearTimeout(pending);
        const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
        post({ type: 'close' });
        // The thread ends once its listener has closed; never wait for ever.
        const timer = setTimeout(() => void thread.terminate(), 2_000);
        await exited;
        clearTimeout(timer);
        receivePending();
        beats.port1.close();
      })()),
  };
}
