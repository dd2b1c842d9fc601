/**
 * Relays a continuable generation (see `plan.ts`): the engine streams it with token ids,
 * the {@link Stitcher} turns its events into the client's response, and when the worker is
 * cut off after the generation has started — connection reset or closed early, engine or
 * worker dead, a stall, the worker lost or handing over — the generation is continued on
 * another ready worker of the deployment and spliced into the same response.
 *
 * This file owns the entry point, phase 1 (the first worker, retried from the start as any
 * request while the generation has not started) and the client's side of the response:
 * commit, writes, the end, the request record. One upstream attempt (events, cut and stall
 * detection) is `attempt.ts`; phase 2, the continuations after a cut, is `continue.ts`.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RoutableWorker } from '@es/pool';
import { ProxyError } from '../errors.js';
import type { ForwardRequest, ForwardShared } from '../forward.js';
import type { ProxyRequestRecord, RequestOutcome } from '../options.js';
import { clientGone, withProgress } from '../request-state.js';
import type { Progress } from '../request-state.js';
import type { WaitDeadline } from '../wait-queue.js';
import { clientHeaders } from '../upstream.js';
import { interrupted, streamAttempt } from './attempt.js';
import { continueAfter } from './continue.js';
import type { ContinuablePlan } from './plan.js';
import { Stitcher } from './stitch.js';

/**
 * Send a continuable generation; resolves once the response is committed to the client
 * (streaming clients: at the first event; others: when the whole response is assembled),
 * rejects with a `ProxyError` when nothing could be committed.
 */
export function forwardGeneration(
  shared: ForwardShared,
  request: ForwardRequest,
  plan: ContinuablePlan,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const relay = new Relay(shared, request, plan, resolve, reject);
    relay.run().catch((error: unknown) => relay.crash(error));
  });
}

/**
 * One relayed generation: its state (the stitcher, the progress of its attempts, whether the
 * response is committed or ended), phase 1 and the client's response.
 */
export class Relay {
  stitcher: Stitcher;
  readonly progress: Progress = { attempts: 0, queuedMs: 0, workerId: undefined };
  committed = false;
  ended = false;
  ttfbMs: number | undefined;
  status = 200;
  /** Response headers of the last worker that streamed (kept for a non-streaming answer). */
  upstreamHeaders: IncomingHttpHeaders = {};

  constructor(
    readonly shared: ForwardShared,
    readonly request: ForwardRequest,
    readonly plan: ContinuablePlan,
    readonly resolveCommit: () => void,
    readonly rejectCommit: (error: unknown) => void,
  ) {
    this.stitcher = new Stitcher(plan);
  }

  /** An unexpected exception: never leave the client hanging. */
  crash(error: unknown): void {
    this.shared.logger?.warn({ err: error, requestId: this.request.requestId }, 'relay failed');
    const proxyError = new ProxyError('internal_error', 'The proxy failed to relay the response.', {
      status: 500,
      cause: error,
    });
    if (!this.committed) this.rejectCommit(withProgress(proxyError, this.progress));
    else this.endWithError(proxyError, 'mid-stream-failure');
  }

  async run(): Promise<void> {
    const { shared, request } = this;
    const router = shared.router(request.deployment.name);
    shared.budget.recordRequest();
    let tried: Set<string> | undefined;
    let queueDeadline: WaitDeadline | undefined;
    // Attempts a draining worker refused (see `forward.ts`): not counted as tries.
    let refused = 0;
    // Phase 1: until the generation has started (the engine sent the prompt's ids), a
    // failure is retried from the start on another worker, as for any request.
    for (;;) {
      if (request.client.gone) return this.fail(clientGone());
      const workers = shared.pool.routable(request.deployment.name);
      const worker = router.pick(request.deployment.routing, workers, request.affinityKey, tried);
      if (worker === undefined) {
        if (this.progress.attempts > refused || workers.length > 0) {
          return this.fail(
            new ProxyError('upstream_unavailable', 'No other worker could take the request.', {
              status: 502,
            }),
          );
        }
        const waitStart = performance.now();
        queueDeadline ??= shared.queue.deadline(request.deployment, waitStart);
        try {
          await shared.queue.wait(request.deployment.name, request.client, queueDeadline);
        } catch (error) {
          return this.fail(error);
        } finally {
          this.progress.queuedMs += performance.now() - waitStart;
        }
        continue;
      }
      const canRetry = () => {
        const attempts = this.progress.attempts - refused;
        if (attempts >= shared.options.retry.maxAttempts || request.client.gone) {
          return false;
        }
        const others = shared.pool
          .routable(request.deployment.name)
          .some((w) => w.id !== worker.id && (tried === undefined || !tried.has(w.id)));
        return others && shared.budget.tryRetry();
      };
      // Each try of phase 1 starts from nothing (a retried attempt may have sent events).
      if (this.progress.attempts > 0) this.stitcher = new Stitcher(this.plan);
      const result = await streamAttempt(
        this,
        worker,
        request.path,
        this.plan.upstreamBody,
        canRetry,
      );
      if (result.kind === 'finished' || result.kind === 'client-gone') return;
      if (result.kind === 'failed') return this.fail(result.error);
      if (result.kind === 'draining') refused++;
      if (result.kind === 'retry' || result.kind === 'draining') {
        shared.logger?.warn(
          { requestId: request.requestId, workerId: worker.id, code: result.error.code },
          `retrying on another worker: ${result.error.message}`,
        );
        (tried ??= new Set()).add(worker.id);
        continue;
      }
      if (!this.stitcher.tracked && !this.committed) {
        // An engine without token ids (vLLM before 0.10.2) cut a non-streaming answer:
        // nothing reached the client, so it starts again elsewhere, as before continuation.
        if (!canRetry()) return this.fail(interrupted(result.error));
        (tried ??= new Set()).add(worker.id);
        continue;
      }
      // Cut after the generation started: phase 2.
      return continueAfter(this, worker, result.reason, result.error);
    }
  }

  /** Before anything was committed: the caller answers the error. */
  fail(error: unknown): void {
    this.ended = true;
    this.rejectCommit(error instanceof ProxyError ? withProgress(error, this.progress) : error);
  }

  /** The client left: rejected before the commit, else its response is cut and recorded (499). */
  clientLeft(worker: RoutableWorker): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.committed) {
      this.rejectCommit(withProgress(clientGone(), this.progress));
      return;
    }
    this.request.sink.destroy(clientGone());
    this.record('client-abort', 499, worker.id, 'client_closed_request');
  }

  /** Send the status and headers to the client (once) and resolve the commit. */
  commit(status: number, headers: IncomingHttpHeaders, worker: RoutableWorker): void {
    if (this.committed) return;
    this.committed = true;
    this.status = status;
    this.ttfbMs = performance.now() - this.request.startedAt;
    const sse = String(headers['content-type'] ?? '').startsWith('text/event-stream');
    this.request.sink.start(
      status,
      clientHeaders(
        headers,
        this.request.requestId,
        sse,
        worker,
        this.shared.options.exposeSelectedEndpoint,
      ),
    );
    this.resolveCommit();
  }

  /** Write stitched text to the client; `false` when the client is not reading. */
  write(text: string): boolean {
    if (text === '') return true;
    return this.request.sink.write(Buffer.from(text));
  }

  /** The generation is whole: end the client's response. */
  complete(worker: RoutableWorker): void {
    if (this.ended) return;
    this.ended = true;
    const { stitcher, request } = this;
    if (this.plan.clientStream) {
      this.write(stitcher.trailer());
      request.sink.end();
    } else {
      const body = Buffer.from(JSON.stringify(stitcher.assemble()));
      const headers: IncomingHttpHeaders = { ...this.upstreamHeaders };
      delete headers['cache-control'];
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(body.length);
      this.commit(200, headers, worker);
      request.sink.write(body);
      request.sink.end();
    }
    this.record('ok', 200, worker.id);
  }

  /** End a response that cannot be finished: an SSE error event, or an error status. */
  endWithError(error: ProxyError, outcome: RequestOutcome): void {
    if (this.ended) return;
    if (!this.committed) {
      this.ended = true;
      this.rejectCommit(withProgress(error, this.progress));
      return;
    }
    this.ended = true;
    const { sink } = this.request;
    if (this.shared.silentStreamCut) sink.end();
    else {
      sink.write(Buffer.from(`data: ${JSON.stringify(error)}\n\n`));
      sink.end();
    }
    this.record(outcome, this.status, this.progress.workerId, error.code);
  }

  /** Report the request to `onRequestComplete`. */
  record(
    outcome: RequestOutcome,
    status: number,
    workerId: string | undefined,
    errorCode?: string,
  ): void {
    const onComplete = this.shared.onRequestComplete;
    if (onComplete === undefined) return;
    const { request, progress, stitcher } = this;
    const record: ProxyRequestRecord = {
      requestId: request.requestId,
      path: request.path,
      model: request.model,
      deployment: request.deployment.name,
      stream: request.stream,
      status,
      outcome,
      latencyMs: performance.now() - request.startedAt,
      queuedMs: progress.queuedMs,
      retries: progress.attempts - 1 - stitcher.splices,
      continuations: stitcher.splices,
    };
    if (workerId !== undefined) record.workerId = workerId;
    if (this.ttfbMs !== undefined) record.ttfbMs = this.ttfbMs;
    if (errorCode !== undefined) record.errorCode = errorCode;
    const usage = stitcher.totalUsage();
    if (usage !== undefined) {
      const prompt = usage.prompt_tokens;
      const completion = usage.completion_tokens;
      if (typeof prompt === 'number') record.promptTokens = prompt;
      if (typeof completion === 'number') record.completionTokens = completion;
      if (typeof prompt === 'number' && typeof completion === 'number') {
        record.totalTokens = prompt + completion;
      }
    }
    onComplete(record);
  }
}
