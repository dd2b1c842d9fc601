import { createWorker } from './worker.js';
import type { WorkerOptions } from './worker-options.js';

/**
 * Runs a worker as a process's main job: starts it, drains on SIGTERM/SIGINT (the drain
 * notice first), kills engine groups on any other way out, and resolves the exit code
 * (0 after a drain, 1 when fenced or on a fatal error).
 * @example
 * process.exitCode = await runWorker({ schedulerUrl, deployment, engine: 'vllm', model, jobId });
 */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const worker = createWorker(options);
  const onSignal = (signal: NodeJS.Signals) => {
    options.logger?.info({ signal }, `${signal} received: draining`);
    void worker.stop(signal);
  };
  const onExit = () => worker.killEnginesSync();
  const onCrash = (error: unknown) => {
    options.logger?.error({ error: String(error) }, 'uncaught error: killing engines');
    worker.killEnginesSync();
    process.exit(1);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('exit', onExit);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  try {
    await worker.start();
    return (await worker.done).code;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    worker.killEnginesSync();
    process.off('exit', onExit);
  }
}
