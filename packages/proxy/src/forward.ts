/**
 * The forwarding path of a request: pick a worker of its deployment (waiting in the queue
 * while there is none), send the request (`pipe.ts`, or the continuation relay for a
 * continuable generation), and retry on another worker within the retry budget while
 * nothing has reached the client.
 */
import type { DeploymentView, PoolView } from '@es/pool';
import type { ClientSink } from './client-sink.js';
import { ProxyError } from './errors.js';
import type {
  ContinuationRecord,
  ProxyLogger,
  ProxyRequestRecord,
  ResolvedContinuationOptions,
  ResolvedProxyOptions,
} from './options.js';
import type { RoutingJournal } from './journal.js';
import { pipeAttempt } from './pipe.js';
import { clientGone, withProgress } from './request-state.js';
import type { ClientState, Progress } from './request-state.js';
import type { DeploymentRouter } from './routing.js';
import type { RetryBudget } from './retry-budget.js';
import type { UpstreamPools } from './upstream-pools.js';
import type { WaitDeadline, WaitQueue } from './wait-queue.js';
import type { GenerationPlan } from './continuation/plan.js';
import { forwardGeneration } from './continuation/relay.js';

/** State shared by every request of one proxy app. */
export interface ForwardShared {
  pool: PoolView;
  options: ResolvedProxyOptions;
  pools: UpstreamPools;
  budget: RetryBudget;
  router(deployment: string): DeploymentRouter;
  queue: WaitQueue;
  onRequestComplete: ((record: ProxyRequestRecord) => void) | undefined;
  logger: ProxyLogger | undefined;
  journal: RoutingJournal | undefined;
  /** A planted fault (tests only): cut streams end without their error event. */
  silentStreamCut: boolean;
  /** A planted fault (tests only): continuations start from the prompt alone. */
  continueFromScratch: boolean;
  /** Attempts in flight per worker id: told when their worker is lost (see `PoolView.onWorkerLost`). */
  attemptsByWorker: Map<string, Set<(reason: string) => void>>;
  /** Limits of continuing a cut generation on another worker. */
  continuation: ResolvedContinuationOptions;
  onContinuation: ((record: ContinuationRecord) => void) | undefined;
}

/** One request on its way to a worker. */
export interface ForwardRequest {
  requestId: string;
  /** Path and query sent upstream. */
  path: string;
  body: Buffer;
  model: string;
  stream: boolean;
  deployment: DeploymentView;
  affinityKey: string | undefined;
  client: ClientState;
  sink: ClientSink;
  /** `performance.now()` at arrival. */
  startedAt: number;
  /** For chat and completions: how the generation is relayed (continued if cut, or not). */
  plan?: GenerationPlan;
}

/**
 * Send `request` to a worker, retrying on another one while nothing has reached the client.
 * Resolves once the response is committed to the sink (the rest streams on its own and is
 * recorded when it ends); rejects with a `ProxyError` otherwise (`client_closed_request`
 * when the client left first).
 */
export async function forward(shared: ForwardShared, request: ForwardRequest): Promise<void> {
  if (request.plan?.continuable === true) return forwardGeneration(shared, request, request.plan);
  const router = shared.router(request.deployment.name);
  const progress: Progress = { attempts: 0, queuedMs: 0, workerId: undefined };
  shared.budget.recordRequest();
  try {
    await forwardLoop(shared, request, router, progress);
  } catch (error) {
    if (error instanceof ProxyError) withProgress(error, progress);
    throw error;
  }
}

async function forwardLoop(
  shared: ForwardShared,
  request: ForwardRequest,
  router: DeploymentRouter,
  progress: Progress,
): Promise<void> {
  const { pool, options } = shared;
  const deployment = request.deployment;
  let tried: Set<string> | undefined;
  let queueDeadline: WaitDeadline | undefined;
  // Attempts a draining worker refused: they reached no engine, so they neither count
  // against `maxAttempts` nor keep the request from waiting for a worker.
  let refused = 0;
  for (;;) {
    if (request.client.gone) throw clientGone();
    const workers = pool.routable(deployment.name);
    const worker = router.pick(deployment.routing, workers, request.affinityKey, tried);
    if (worker === undefined) {
      if (progress.attempts > refused || workers.length > 0) {
        throw new ProxyError('upstream_unavailable', 'No other worker could take the request.', {
          status: 502,
        });
      }
      const waitStart = performance.now();
      queueDeadline ??= shared.queue.deadline(deployment, waitStart);
      try {
        await shared.queue.wait(deployment.name, request.client, queueDeadline);
      } finally {
        progress.queuedMs += performance.now() - waitStart;
      }
      continue;
    }
    progress.attempts++;
    progress.workerId = worker.id;
    shared.journal?.({
      type: 'attempt',
      time: Date.now(),
      requestId: request.requestId,
      deployment: deployment.name,
      workerId: worker.id,
      attempt: progress.attempts,
    });
    const canRetry = (): boolean => {
      if (progress.attempts - refused >= options.retry.maxAttempts || request.client.gone) {
        return false;
      }
      const others = pool
        .routable(deployment.name)
        .some((w) => w.id !== worker.id && (tried === undefined || !tried.has(w.id)));
      return others && shared.budget.tryRetry();
    };
    const result = await pipeAttempt(shared, request, worker, progress, canRetry);
    if (result.kind === 'committed') return;
    if (result.kind === 'failed') throw result.error;
    if (result.kind === 'draining') refused++;
    shared.logger?.warn(
      { requestId: request.requestId, workerId: worker.id, code: result.error.code },
      `retrying on another worker: ${result.error.message}`,
    );
    (tried ??= new Set()).add(worker.id);
  }
}
