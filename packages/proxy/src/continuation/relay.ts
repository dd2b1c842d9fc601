/**
 * Relays a continuable generation (see `plan.ts`): the engine streams it with token ids,
 * the {@link Stitcher} turns its events into the client's response, and when the worker is
 * cut off after the generation has started — connection reset or closed early, engine or
 * worker dead, a stall, the worker lost or handing over — the generation is continued on
 * another ready worker of the deployment and spliced into the same response.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RoutableWorker } from '@es/pool';
import type { Dispatcher } from 'undici';
import { ProxyError } from '../errors.js';
import type { ForwardRequest, ForwardShared } from '../forward.js';
import type { ContinuationRecord, ProxyRequestRecord, RequestOutcome } from '../options.js';
import { clientGone, withProgress } from '../request-state.js';
import type { Progress } from '../request-state.js';
import {
  WorkerLostError,
  classify,
  clientHeaders,
  trackAttempt,
  upstreamHeaders,
} from '../upstream.js';
import { continuationBody } from './plan.js';
import type { ContinuablePlan } from './plan.js';
import { SseSplitter } from './sse.js';
import { Stitcher, heldBackText } from './stitch.js';

/** After this long without a fresh worker, a continuation may go to one already tried. */
const REUSE_AFTER_MS = 1_000;

/** The pause after a continuation that could not start, before the next try. */
const RETRY_PAUSE_MS = 100;

/** An upstream event larger than this is not an engine's (a token chunk is ~300 bytes). */
const MAX_EVENT_BYTES = 8 * 1024 * 1024;

/** Why a generation was cut (the `reason` of a `continued` continuation). */
export type CutReason = 'connection' | 'closed' | 'stall' | 'worker-lost' | 'hand-over';

/** The stream sent nothing for longer than the stall timeout. */
class StallError extends Error {
  readonly code = 'ES_STREAM_STALLED';
}

/** The proxy ended the upstream itself (a stop string found across a splice). */
class DoneError extends Error {
  readonly code = 'ES_GENERATION_DONE';
}

type AttemptResult =
  | { kind: 'finished' }
  | { kind: 'retry'; error: ProxyError }
  | { kind: 'failed'; error: ProxyError }
  | { kind: 'cut'; reason: CutReason; error: Error }
  | { kind: 'client-gone' };

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

class Relay {
  private stitcher: Stitcher;
  private readonly progress: Progress = { attempts: 0, queuedMs: 0, workerId: undefined };
  private committed = false;
  private ended = false;
  private ttfbMs: number | undefined;
  private status = 200;
  /** Response headers of the last worker that streamed (kept for a non-streaming answer). */
  private upstreamHeaders: IncomingHttpHeaders = {};

  constructor(
    private readonly shared: ForwardShared,
    private readonly request: ForwardRequest,
    private readonly plan: ContinuablePlan,
    private readonly resolveCommit: () => void,
    private readonly rejectCommit: (error: unknown) => void,
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
    let queueDeadline: number | undefined;
    // Phase 1: until the generation has started (the engine sent the prompt's ids), a
    // failure is retried from the start on another worker, as for any request.
    for (;;) {
      if (request.client.gone) return this.fail(clientGone());
      const workers = shared.pool.routable(request.deployment.name);
      const worker = router.pick(request.deployment.routing, workers, request.affinityKey, tried);
      if (worker === undefined) {
        if (this.progress.attempts > 0) {
          return this.fail(
            new ProxyError('upstream_unavailable', 'No other worker could take the request.', {
              status: 502,
            }),
          );
        }
        const waitStart = performance.now();
        queueDeadline ??= waitStart + shared.options.queue.timeoutMs;
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
        if (this.progress.attempts >= shared.options.retry.maxAttempts || request.client.gone) {
          return false;
        }
        const others = shared.pool
          .routable(request.deployment.name)
          .some((w) => w.id !== worker.id && (tried === undefined || !tried.has(w.id)));
        return others && shared.budget.tryRetry();
      };
      // Each try of phase 1 starts from nothing (a retried attempt may have sent events).
      if (this.progress.attempts > 0) this.stitcher = new Stitcher(this.plan);
      const result = await this.attempt(worker, request.path, this.plan.upstreamBody, canRetry);
      if (result.kind === 'finished' || result.kind === 'client-gone') return;
      if (result.kind === 'failed') return this.fail(result.error);
      if (result.kind === 'retry') {
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
      return this.continueAfter(worker, result.reason, result.error);
    }
  }

  /** Phase 2: continue on other workers until the generation ends or cannot go on. */
  private async continueAfter(cutWorker: RoutableWorker, reason: CutReason, error: Error) {
    const { shared, request, stitcher } = this;
    const limits = shared.continuation;
    let from = cutWorker;
    let cause: { reason: CutReason; error: Error } = { reason, error };
    for (;;) {
      const cutAt = performance.now();
      const base = {
        requestId: request.requestId,
        deployment: request.deployment.name,
        fromWorker: from.id,
        cause: cause.reason,
        generatedTokens: stitcher.ids.length,
      };
      const give = (why: string, message: string) => {
        this.report({ ...base, outcome: 'failed', reason: why });
        this.endWithError(
          new ProxyError(
            'upstream_stream_interrupted',
            `The worker serving this request failed mid-response (${cause.error.message}) and ${message}`,
            { status: 502 },
          ),
          'mid-stream-failure',
        );
      };
      if (!stitcher.tracked) {
        // The engine did not return token ids (vLLM before 0.10.2): nothing to continue from.
        this.report({ ...base, outcome: 'refused', reason: 'engine' });
        return this.endWithError(interrupted(cause.error), 'mid-stream-failure');
      }
      if (stitcher.splices >= limits.maxContinuations) {
        return give(
          'max-continuations',
          `it was already continued ${stitcher.splices} times (--max-continuations).`,
        );
      }
      const deadline = cutAt + limits.deadlineMs;
      const tried = new Set<string>([from.id]);
      let next: AttemptResult | undefined;
      let to: RoutableWorker | undefined;
      let budgetTaken = false;
      // Tries end at the deadline (a worker that keeps failing is ejected from routing by
      // its reported outcomes meanwhile); a failed try pauses before the next.
      for (let tries = 0; next === undefined; tries++) {
        if (request.client.gone) return this.clientLeft(from);
        if (tries > 0) await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
        to = await this.pickForContinuation(tried, cutAt, deadline);
        if (to === undefined) {
          if (request.client.gone) return this.clientLeft(from);
          return give(
            'no-worker',
            `no other worker could continue it within ${limits.deadlineMs} ms.`,
          );
        }
        if (!budgetTaken) {
          if (!shared.budget.tryRetry()) {
            return give('retry-budget', 'the retry budget is spent.');
          }
          budgetTaken = true;
        }
        tried.add(to.id);
        const detokenized = await this.detokenize(to);
        if (detokenized === undefined) continue;
        // The worker may have left routing while /detokenize answered: pick again.
        const chosen = to;
        if (!shared.pool.routable(request.deployment.name).some((w) => w.id === chosen.id)) {
          continue;
        }
        let heldBack = heldBackText(detokenized, stitcher.emitted);
        if (heldBack === undefined) {
          stitcher.inexact.add('text_mismatch');
          heldBack = '';
        }
        const left = stitcher.tokensLeft;
        if (left !== undefined && left <= 0) {
          // Nothing left to generate: the generation ended exactly at the cut.
          this.write(stitcher.finishByProxy(heldBack));
          this.report({ ...base, toWorker: to.id, ...this.outcome(cause.reason) });
          return this.complete(to);
        }
        stitcher.splice(heldBack);
        const splicedAt = { cutAt, firstAt: undefined as number | undefined };
        const body = continuationBody(
          this.plan,
          request.deployment.modelNames[0] ?? request.model,
          stitcher.promptIds!,
          shared.continueFromScratch ? [] : stitcher.ids,
        );
        const result = await this.attempt(to, '/v1/completions', body, () => false, splicedAt);
        const waitMs =
          splicedAt.firstAt === undefined ? undefined : splicedAt.firstAt - splicedAt.cutAt;
        if (result.kind === 'retry' || result.kind === 'failed') {
          // The continuation never started: the same splice on another worker.
          stitcher.unsplice();
          shared.logger?.warn(
            { requestId: request.requestId, workerId: to.id, code: result.error.code },
            `continuation could not start: ${result.error.message}`,
          );
          continue;
        }
        this.report({
          ...base,
          toWorker: to.id,
          ...(waitMs === undefined ? {} : { waitMs }),
          ...this.outcome(cause.reason),
        });
        next = result;
      }
      if (next.kind !== 'cut') return;
      from = to!;
      cause = { reason: next.reason, error: next.error };
    }
  }

  private outcome(reason: CutReason): { outcome: 'continued' | 'inexact'; reason: string } {
    const inexact = [...this.stitcher.inexact];
    return inexact.length > 0
      ? { outcome: 'inexact', reason: inexact[0]! }
      : { outcome: 'continued', reason };
  }

  /**
   * A ready worker to continue on: one not `tried` yet, else — once {@link REUSE_AFTER_MS}
   * have passed since the cut, time for the pool to take a dead worker out of routing — any
   * ready one again (a worker that cut a stream but stays ready, e.g. one back from an
   * ejection, is better than none); waits for one until `deadline`.
   */
  private async pickForContinuation(
    tried: Set<string>,
    cutAt: number,
    deadline: number,
  ): Promise<RoutableWorker | undefined> {
    const { shared, request } = this;
    const router = shared.router(request.deployment.name);
    const pick = (workers: readonly RoutableWorker[], exclude: Set<string> | undefined) =>
      router.pick(request.deployment.routing, workers, request.affinityKey, exclude);
    for (;;) {
      const workers = shared.pool.routable(request.deployment.name);
      const fresh = pick(workers, tried);
      if (fresh !== undefined) return fresh;
      if (workers.length > 0 && performance.now() - cutAt >= REUSE_AFTER_MS) {
        return pick(workers, undefined);
      }
      if (performance.now() >= deadline || request.client.gone) return undefined;
      if (workers.length > 0) {
        // Only tried workers are ready: a short pause, for a new one or the reuse delay.
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      try {
        await shared.queue.wait(request.deployment.name, request.client, deadline);
      } catch {
        return undefined;
      }
    }
  }

  /** The text of every generated id, from `worker`'s `/detokenize` (undefined if it fails). */
  private async detokenize(worker: RoutableWorker): Promise<string | undefined> {
    const { shared, request, stitcher } = this;
    try {
      const response = await shared.pools.get(worker.baseUrl).request({
        path: '/detokenize',
        method: 'POST',
        headers: upstreamHeaders(request, worker, false),
        body: JSON.stringify({
          model: request.deployment.modelNames[0] ?? request.model,
          tokens: stitcher.ids,
        }),
        headersTimeout: shared.continuation.deadlineMs,
        bodyTimeout: shared.continuation.deadlineMs,
      });
      const text = await response.body.text();
      if (response.statusCode !== 200) {
        throw new Error(`/detokenize answered ${response.statusCode}: ${text.slice(0, 200)}`);
      }
      const prompt = (JSON.parse(text) as { prompt?: unknown }).prompt;
      if (typeof prompt !== 'string') throw new Error('/detokenize answered without a prompt');
      return prompt;
    } catch (error) {
      shared.pool.reportOutcome(worker.id, 'connect-error');
      shared.logger?.warn(
        { requestId: request.requestId, workerId: worker.id, err: error },
        `continuation: /detokenize failed on ${worker.id}`,
      );
      return undefined;
    }
  }

  private report(record: ContinuationRecord): void {
    const { shared } = this;
    try {
      shared.onContinuation?.(record);
    } catch (error) {
      shared.logger?.warn({ err: error }, 'onContinuation threw');
    }
  }

  /** Before anything was committed: the caller answers the error. */
  private fail(error: unknown): void {
    this.ended = true;
    this.rejectCommit(error instanceof ProxyError ? withProgress(error, this.progress) : error);
  }

  private clientLeft(worker: RoutableWorker): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.committed) {
      this.rejectCommit(withProgress(clientGone(), this.progress));
      return;
    }
    this.request.sink.destroy(clientGone());
    this.record('client-abort', 499, worker.id, 'client_closed_request');
  }

  private commit(status: number, headers: IncomingHttpHeaders, worker: RoutableWorker): void {
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

  private write(text: string): boolean {
    if (text === '') return true;
    return this.request.sink.write(Buffer.from(text));
  }

  /** The generation is whole: end the client's response. */
  private complete(worker: RoutableWorker): void {
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
  private endWithError(error: ProxyError, outcome: RequestOutcome): void {
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

  private record(
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

  /**
   * One upstream attempt on `worker`. Its events go through the stitcher to the client;
   * resolves with how the attempt ended.
   * @param spliced set for a continuation: the time its first event arrived is noted.
   */
  private attempt(
    worker: RoutableWorker,
    path: string,
    body: Buffer,
    canRetry: () => boolean,
    spliced?: { firstAt: number | undefined },
  ): Promise<AttemptResult> {
    const { shared, request, stitcher, plan } = this;
    this.progress.attempts++;
    this.progress.workerId = worker.id;
    shared.journal?.({
      type: 'attempt',
      time: Date.now(),
      requestId: request.requestId,
      deployment: request.deployment.name,
      workerId: worker.id,
      attempt: this.progress.attempts,
    });
    return new Promise((settle) => {
      let phase: 'waiting' | 'events' | 'raw' | 'done' = 'waiting';
      let controller: Dispatcher.DispatchController | undefined;
      let upstreamStatus = 0;
      let sawEvent = false;
      let stall: NodeJS.Timeout | undefined;
      const splitter = new SseSplitter();
      let released = false;

      const untrack = trackAttempt(shared, worker, (error) => controller?.abort(error));
      const release = () => {
        if (released) return;
        released = true;
        if (stall !== undefined) clearTimeout(stall);
        untrack();
        request.client.onGone(undefined);
      };
      const done = (result: AttemptResult) => {
        phase = 'done';
        release();
        settle(result);
      };

      const finishGeneration = () => {
        shared.pool.reportOutcome(worker.id, 'success');
        this.complete(worker);
        done({ kind: 'finished' });
      };

      const onEvent = (c: Dispatcher.DispatchController, payload: string): boolean => {
        if (payload === '[DONE]') {
          // The engine ended the stream itself (vLLM sends it after the finish and usage).
          finishGeneration();
          return false;
        }
        let event: Record<string, unknown>;
        try {
          event = JSON.parse(payload) as Record<string, unknown>;
        } catch {
          event = {
            error: { message: 'the engine sent an unreadable event', type: 'server_error' },
          };
        }
        if (!sawEvent) {
          sawEvent = true;
          if (spliced !== undefined) spliced.firstAt = performance.now();
          if (plan.clientStream && !this.committed) {
            this.commit(200, upstreamResponseHeaders, worker);
          }
        }
        const accepted = stitcher.accept(event, payload);
        if (accepted.error !== undefined) {
          shared.pool.reportOutcome(worker.id, 'upstream-5xx');
          if (plan.clientStream) {
            this.write(accepted.out);
            this.ended = true;
            request.sink.end();
            this.record('mid-stream-failure', 200, worker.id, 'upstream_stream_error');
          } else {
            this.endWithError(
              new ProxyError(
                'upstream_stream_interrupted',
                `The worker reported an error: ${JSON.stringify(accepted.error)}`,
                { status: 502 },
              ),
              'mid-stream-failure',
            );
          }
          c.abort(new DoneError('engine error passed on'));
          done({ kind: 'finished' });
          return false;
        }
        if (!this.write(accepted.out)) {
          c.pause();
          request.sink.onDrain(() => c.resume());
        }
        if (accepted.finished && accepted.abortUpstream) {
          c.abort(new DoneError('stop string found across a splice'));
          finishGeneration();
          return false;
        }
        return true;
      };
      let upstreamResponseHeaders: IncomingHttpHeaders = {};

      const cut = (error: Error & { code?: string }) => {
        const reason: CutReason =
          error instanceof StallError || error.code === 'UND_ERR_BODY_TIMEOUT'
            ? 'stall'
            : error instanceof WorkerLostError
              ? error.message.includes('hand-over')
                ? 'hand-over'
                : 'worker-lost'
              : error.code === 'ES_STREAM_CLOSED'
                ? 'closed'
                : 'connection';
        if (reason !== 'hand-over') {
          shared.pool.reportOutcome(
            worker.id,
            reason === 'stall' ? 'timeout' : 'mid-stream-failure',
          );
        }
        shared.logger?.warn(
          { requestId: request.requestId, workerId: worker.id, code: error.code, reason },
          `generation cut after ${stitcher.ids.length} tokens: ${error.message}`,
        );
        done({ kind: 'cut', reason, error });
      };

      const armStall = () => {
        const ms = shared.continuation.stallTimeoutMs;
        if (ms <= 0) return;
        if (stall === undefined) {
          stall = setTimeout(() => controller?.abort(new StallError(`no token for ${ms} ms`)), ms);
          stall.unref();
        } else stall.refresh();
      };

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
          if (request.client.gone) c.abort(clientGone());
        },
        onResponseStart: (c, statusCode, headers) => {
          if (phase !== 'waiting') return;
          upstreamStatus = statusCode;
          const sse = String(headers['content-type'] ?? '').startsWith('text/event-stream');
          if (statusCode === 200 && sse) {
            upstreamResponseHeaders = headers;
            this.upstreamHeaders = headers;
            phase = 'events';
            return;
          }
          if (spliced !== undefined || statusCode >= 500 || statusCode === 429) {
            shared.pool.reportOutcome(worker.id, statusCode === 429 ? 'success' : 'upstream-5xx');
            const error = new ProxyError(
              'upstream_unavailable',
              `The worker answered ${statusCode}.`,
              { status: 502 },
            );
            if (spliced !== undefined || canRetry()) {
              c.abort(new DoneError('discarding a retried response'));
              done({ kind: 'retry', error });
              return;
            }
          }
          // The engine's own answer (a 4xx about the request, or an error nobody can retry):
          // passed on as it is.
          phase = 'raw';
          this.commit(statusCode, headers, worker);
        },
        onResponseData: (c, chunk) => {
          if (phase === 'raw') {
            if (!request.sink.write(chunk)) {
              c.pause();
              request.sink.onDrain(() => c.resume());
            }
            return;
          }
          if (phase !== 'events') return;
          if (sawEvent) armStall();
          for (const payload of splitter.push(chunk)) {
            if (!onEvent(c, payload)) return;
          }
          if (splitter.buffered > MAX_EVENT_BYTES) {
            c.abort(new Error(`the worker sent an event of more than ${MAX_EVENT_BYTES} bytes`));
            return;
          }
          if (sawEvent) armStall();
        },
        onResponseEnd: () => {
          if (phase === 'done') return;
          if (phase === 'raw') {
            this.ended = true;
            request.sink.end();
            shared.pool.reportOutcome(
              worker.id,
              upstreamStatus >= 500 ? 'upstream-5xx' : 'success',
            );
            this.record('ok', upstreamStatus, worker.id);
            done({ kind: 'finished' });
            return;
          }
          if (stitcher.done) {
            finishGeneration();
            return;
          }
          const error = Object.assign(new Error('the stream ended before the generation did'), {
            code: 'ES_STREAM_CLOSED',
          });
          if (sawEvent) cut(error);
          else done({ kind: canRetry() ? 'retry' : 'failed', error: interrupted(error, 502) });
        },
        onResponseError: (_c, error: Error & { code?: string }) => {
          if (phase === 'done') return;
          if (request.client.gone) {
            release();
            phase = 'done';
            this.clientLeft(worker);
            settle({ kind: 'client-gone' });
            return;
          }
          if (phase === 'raw') {
            this.ended = true;
            request.sink.destroy(error);
            this.record(
              'mid-stream-failure',
              upstreamStatus,
              worker.id,
              'upstream_stream_interrupted',
            );
            done({ kind: 'finished' });
            return;
          }
          if (stitcher.done) {
            // Cut between the finish and `[DONE]`: nothing is missing.
            finishGeneration();
            return;
          }
          if (sawEvent && (stitcher.tracked || this.committed)) {
            cut(error);
            return;
          }
          const { outcome, proxyError } = classify(error, worker);
          shared.pool.reportOutcome(worker.id, outcome);
          done(
            canRetry()
              ? { kind: 'retry', error: proxyError }
              : { kind: 'failed', error: proxyError },
          );
        },
      };

      request.client.onGone(() => controller?.abort(clientGone()));
      try {
        shared.pools
          .get(worker.baseUrl)
          .dispatch(
            { path, method: 'POST', body, headers: upstreamHeaders(request, worker, true) },
            handler,
          );
      } catch (error) {
        shared.pool.reportOutcome(worker.id, 'connect-error');
        done({
          kind: canRetry() ? 'retry' : 'failed',
          error: classify(error as Error, worker).proxyError,
        });
      }
    });
  }
}

function interrupted(error: Error, status = 502): ProxyError {
  return new ProxyError(
    'upstream_stream_interrupted',
    `The worker serving this request failed mid-response: ${error.message}`,
    { status },
  );
}
