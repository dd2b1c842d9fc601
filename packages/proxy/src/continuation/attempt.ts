/**
 * One upstream attempt of a relayed generation, on one worker: its SSE events go through the
 * relay's stitcher to the client; it detects a cut (connection reset or closed early, the
 * worker lost or handing over) and a stall (no event for `continuation.stallTimeoutMs`), and
 * says how the attempt ended: finished, to be retried, failed, or cut.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RoutableWorker } from '@es/pool';
import type { Dispatcher } from 'undici';
import { pauseUntilDrained } from '../client-sink.js';
import { ProxyError } from '../errors.js';
import { clientGone } from '../request-state.js';
import {
  WorkerLostError,
  classify,
  drainingError,
  isDrainingRefusal,
  trackAttempt,
  upstreamHeaders,
} from '../upstream.js';
import type { Relay } from './relay.js';
import { SseSplitter } from './sse.js';

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

/** How an upstream attempt ended. */
export type AttemptResult =
  | { kind: 'finished' }
  | { kind: 'retry'; error: ProxyError }
  | { kind: 'failed'; error: ProxyError }
  | { kind: 'draining'; error: ProxyError }
  | { kind: 'cut'; reason: CutReason; error: Error }
  | { kind: 'client-gone' };

/**
 * One upstream attempt on `worker`. Its events go through the stitcher to the client;
 * resolves with how the attempt ended.
 * @param spliced set for a continuation: the time its first event arrived is noted.
 */
export function streamAttempt(
  relay: Relay,
  worker: RoutableWorker,
  path: string,
  body: Buffer,
  canRetry: () => boolean,
  spliced?: { firstAt: number | undefined },
): Promise<AttemptResult> {
  const { shared, request, stitcher, plan } = relay;
  relay.progress.attempts++;
  relay.progress.workerId = worker.id;
  shared.journal?.({
    type: 'attempt',
    time: Date.now(),
    requestId: request.requestId,
    deployment: request.deployment.name,
    workerId: worker.id,
    attempt: relay.progress.attempts,
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

    const pause = pauseUntilDrained(request.sink);
    // What the events of one upstream read make for the client, written at once: one write
    // per read, as a byte pipe makes (several events arrive together when the proxy is busy).
    let batch = '';
    const flush = (c: Dispatcher.DispatchController) => {
      if (batch === '') return;
      const out = batch;
      batch = '';
      if (!relay.write(out)) pause(c);
    };

    const finishGeneration = () => {
      shared.pool.reportOutcome(worker.id, 'success');
      relay.complete(worker);
      done({ kind: 'finished' });
    };

    /** One event; false when it ended the attempt (the rest of the read is dropped). */
    const onEvent = (c: Dispatcher.DispatchController, payload: string): boolean => {
      if (payload === '[DONE]') {
        // The engine ended the stream itself (vLLM sends it after the finish and usage).
        flush(c);
        finishGeneration();
        return false;
      }
      if (!sawEvent) {
        sawEvent = true;
        if (spliced !== undefined) spliced.firstAt = performance.now();
        if (plan.clientStream && !relay.committed) {
          relay.commit(200, upstreamResponseHeaders, worker);
        }
      }
      const accepted = stitcher.acceptJson(payload);
      batch += accepted.out;
      if (accepted.error !== undefined) {
        shared.pool.reportOutcome(worker.id, 'upstream-5xx');
        if (plan.clientStream) {
          flush(c);
          relay.ended = true;
          request.sink.end();
          relay.record('mid-stream-failure', 200, worker.id, 'upstream_stream_error');
        } else {
          relay.endWithError(
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
      if (accepted.finished && accepted.abortUpstream) {
        flush(c);
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
        shared.pool.reportOutcome(worker.id, reason === 'stall' ? 'timeout' : 'mid-stream-failure');
      }
      shared.logger?.warn(
        { requestId: request.requestId, workerId: worker.id, code: error.code, reason },
        `generation cut after ${stitcher.generated} tokens: ${error.message}`,
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
        if (isDrainingRefusal(statusCode, headers)) {
          // Not a failure: the worker drains; it leaves this process's routing now.
          shared.pool.reportOutcome(worker.id, 'draining');
          // Settled first: the abort reports an error synchronously, which must be ignored.
          done({ kind: 'draining', error: drainingError(worker) });
          c.abort(new DoneError('discarding a draining refusal'));
          return;
        }
        upstreamStatus = statusCode;
        const sse = String(headers['content-type'] ?? '').startsWith('text/event-stream');
        if (statusCode === 200 && sse) {
          upstreamResponseHeaders = headers;
          relay.upstreamHeaders = headers;
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
        relay.commit(statusCode, headers, worker);
      },
      onResponseData: (c, chunk) => {
        if (phase === 'raw') {
          if (!request.sink.write(chunk)) pause(c);
          return;
        }
        if (phase !== 'events') return;
        for (const payload of splitter.push(chunk)) {
          if (!onEvent(c, payload)) return;
        }
        flush(c);
        if (splitter.buffered > MAX_EVENT_BYTES) {
          c.abort(new Error(`the worker sent an event of more than ${MAX_EVENT_BYTES} bytes`));
          return;
        }
        if (sawEvent) armStall();
      },
      onResponseEnd: () => {
        if (phase === 'done') return;
        if (phase === 'raw') {
          relay.ended = true;
          request.sink.end();
          shared.pool.reportOutcome(worker.id, upstreamStatus >= 500 ? 'upstream-5xx' : 'success');
          relay.record('ok', upstreamStatus, worker.id);
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
          relay.clientLeft(worker);
          settle({ kind: 'client-gone' });
          return;
        }
        if (phase === 'raw') {
          relay.ended = true;
          request.sink.destroy(error);
          relay.record(
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
        if (sawEvent && (stitcher.tracked || relay.committed)) {
          cut(error);
          return;
        }
        const { outcome, proxyError } = classify(error, worker);
        shared.pool.reportOutcome(worker.id, outcome);
        done(
          canRetry() ? { kind: 'retry', error: proxyError } : { kind: 'failed', error: proxyError },
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

/** The client's error for a worker that failed mid-response. */
export function interrupted(error: Error, status = 502): ProxyError {
  return new ProxyError(
    'upstream_stream_interrupted',
    `The worker serving this request failed mid-response: ${error.message}`,
    { status },
  );
}
