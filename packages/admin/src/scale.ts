/**
 * Runtime scaling and operator drains, built only on the public APIs of `@es/pool`
 * (see packages/pool/REQUESTS.md for the pool methods that would replace this file).
 */
import type { NodeProvider, Reconciler, Registry } from '@es/pool';
import { AdminError } from './errors.js';
import type { DrainResponse, ScaleResponse } from '@es/client';

/**
 * Set a deployment's `maxNodes` now. Lowering it lets the reconciler's planner pick the
 * surplus (pending jobs first, then the newest running ones) and cancel it in the tick this
 * call runs; the cancelled jobs' workers leave routing at once (in-flight requests finish
 * during the worker's drain grace). Raising it submits on that tick.
 */
export async function scaleDeployment(
  registry: Registry,
  reconciler: Reconciler,
  name: string,
  maxNodes: number,
): Promise<ScaleResponse> {
  const config = registry.deploymentConfig(name);
  if (config === undefined) {
    throw new AdminError('unknown_deployment', `deployment ${name} is not served here`, {
      param: 'name',
    });
  }
  if (!Number.isInteger(maxNodes) || maxNodes < 0) {
    throw new AdminError(
      'bad_request',
      `maxNodes must be an integer >= 0, got ${String(maxNodes)}`,
      {
        param: 'maxNodes',
      },
    );
  }
  const previousMaxNodes = config.maxNodes;
  // addDeployment replaces the config of a served deployment in place (same workers).
  registry.addDeployment({ ...config, maxNodes });
  // A tick already running planned with the old maximum: run one more after it.
  const first = await reconciler.tickOnce();
  const second = await reconciler.tickOnce();
  const cancelled = [...new Set([...first.cancelled, ...second.cancelled])];
  for (const jobId of cancelled) registry.drainJob(jobId, `scaled down to maxNodes ${maxNodes}`);
  return { deployment: name, previousMaxNodes, maxNodes, cancelled };
}

/** Take one worker out of routing; it stays draining until its job ends (see `drainJob`). */
export function drainWorker(registry: Registry, workerId: string): DrainResponse {
  const worker = registry.worker(workerId);
  if (worker === undefined || worker.state === 'gone') {
    throw new AdminError('unknown_worker', `worker ${workerId} is not registered`, {
      param: 'id',
    });
  }
  registry.drain(workerId, 'drained by an operator');
  return { drained: [workerId] };
}

/** Options of {@link drainJob}. */
export interface DrainJobOptions {
  /** Longest wait for the job's in-flight requests before it is cancelled (default 60 000 ms). */
  graceMs?: number;
  /** Poll interval of that wait (default 250 ms). */
  pollMs?: number;
  /** Told when the cancel fails (it is retried by nobody: the operator can drain again). */
  onError?: (error: unknown) => void;
}

/**
 * Drain every worker of a job now, then cancel the job once its in-flight requests have
 * finished (or after `graceMs`); the reconciler sees the job end and submits a replacement,
 * as for any other departure. Resolves after the drain, not after the cancel.
 */
export function drainJob(
  registry: Registry,
  provider: NodeProvider,
  jobId: string,
  options: DrainJobOptions = {},
): DrainResponse {
  const job = registry.job(jobId);
  if (job === undefined) {
    throw new AdminError('unknown_job', `job ${jobId} has no registered worker here`, {
      param: 'id',
    });
  }
  registry.drainJob(jobId, 'drained by an operator');
  const graceMs = options.graceMs ?? 60_000;
  const pollMs = options.pollMs ?? 250;
  const deadline = Date.now() + graceMs;
  const busy = () =>
    registry.workers().some((w) => w.jobId === jobId && w.state !== 'gone' && w.inFlight > 0);
  const wait = (): void => {
    if (busy() && Date.now() < deadline) {
      setTimeout(wait, pollMs).unref();
      return;
    }
    provider.cancel([jobId]).then(
      () => {
        registry.emit({
          type: 'cancelled',
          deployment: job.deployment,
          jobId,
          reason: 'drained by an operator',
        });
      },
      (error: unknown) => options.onError?.(error),
    );
  };
  wait();
  return { drained: job.workerIds, jobId };
}
