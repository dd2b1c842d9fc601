/**
 * One attempt of a request that is not continued (see `forward.ts`): dispatch it to a
 * worker, pipe the answer to the client byte for byte once its first body byte arrives, and
 * say whether a failure before that may be retried elsewhere. A failure after it ends the
 * client's response with an error.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { AttemptOutcome, RoutableWorker } from '@es/pool';
import type { Dispatcher } from 'undici';
import { pauseUntilDrained } from './client-sink.js';
import { ProxyError } from './errors.js';
import type { ForwardRequest, ForwardShared } from './forward.js';
import type { ProxyRequestRecord, RequestOutcome } from './options.js';
import { clientGone } from './request-state.js';
import type { Progress } from './request-state.js';
import {
  classify,
  clientHeaders,
  drainingError,
  isDrainingRefusal,
  trackAttempt,
  upstreamHeaders,
} from './upstream.js';
import { UsageTail } from './usage.js';

/** How an attempt ended: committed to the client, or a failure before that. */
export type PipeResult =
  | { kind: 'committed' }
  | { kind: 'retry'; error: ProxyError }
  | { kind: 'failed'; error: ProxyError }
  | { kind: 'draining'; error: ProxyError };

/**
 * Send `request` to `worker` and pipe its answer to the client. Resolves `committed` once the
 * first body byte (or the end) reached the client; before that a failure resolves `retry`
 * when `canRetry()` allows another worker, else `failed`; a worker's draining refusal
 * resolves `draining` (always to be sent elsewhere).
 */
export function pipeAttempt(
  shared: ForwardShared,
  request: ForwardRequest,
  worker: RoutableWorker,
  progress: Progress,
  canRetry: () => boolean,
): Promise<PipeResult> {
  return new Promise((settle) => {
    const { pool } = shared;
    const sink = request.sink;
    let phase: 'waiting' | 'headers' | 'committed' | 'done' = 'waiting';
    const pause = pauseUntilDrained(sink);
    let controller: Dispatcher.DispatchController | undefined;
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let sse = false;
    let ttfbMs: number | undefined;
    const tail = new UsageTail();
    let released = false;

    const untrack = trackAttempt(shared, worker, (error) => controller?.abort(error));
    const release = () => {
      if (released) return;
      released = true;
      untrack();
      request.client.onGone(undefined);
    };

    const finish = (outcome: RequestOutcome, clientStatus: number, errorCode?: string) => {
      phase = 'done';
      release();
      const onComplete = shared.onRequestComplete;
      if (onComplete === undefined) return;
      const record: ProxyRequestRecord = {
        requestId: request.requestId,
        path: request.path,
        model: request.model,
        deployment: request.deployment.name,
        workerId: worker.id,
        stream: request.stream,
        status: clientStatus,
        outcome,
        latencyMs: performance.now() - request.startedAt,
        queuedMs: progress.queuedMs,
        retries: progress.attempts - 1,
      };
      if (ttfbMs !== undefined) record.ttfbMs = ttfbMs;
      if (errorCode !== undefined) record.errorCode = errorCode;
      const usage = tail.read();
      if (usage !== undefined) Object.assign(record, usage);
      onComplete(record);
    };

    const commit = () => {
      phase = 'committed';
      ttfbMs = performance.now() - request.startedAt;
      sse = String(headers['content-type'] ?? '').startsWith('text/event-stream');
      sink.start(
        status,
        clientHeaders(
          headers,
          request.requestId,
          sse,
          worker,
          shared.options.exposeSelectedEndpoint,
        ),
      );
      settle({ kind: 'committed' });
    };

    const preCommitFailure = (error: ProxyError, outcome: AttemptOutcome) => {
      pool.reportOutcome(worker.id, outcome);
      const retry = canRetry();
      phase = 'done';
      release();
      settle(retry ? { kind: 'retry', error } : { kind: 'failed', error });
    };

    const midStreamFailure = (error: Error & { code?: string }) => {
      const timeout = error.code === 'UND_ERR_BODY_TIMEOUT';
      const plan = request.plan;
      if (plan !== undefined && !plan.continuable) {
        shared.onContinuation?.({
          requestId: request.requestId,
          deployment: request.deployment.name,
          fromWorker: worker.id,
          outcome: 'refused',
          reason: plan.reason,
          cause: timeout ? 'stall' : 'connection',
          generatedTokens: 0,
        });
      }
      pool.reportOutcome(worker.id, timeout ? 'timeout' : 'mid-stream-failure');
      shared.logger?.warn(
        { requestId: request.requestId, workerId: worker.id, code: error.code },
        `worker failed mid-stream: ${error.message}`,
      );
      const proxyError = new ProxyError(
        'upstream_stream_interrupted',
        `The worker serving this request failed mid-response: ${error.message}`,
        { status: 502 },
      );
      try {
        if (sse && shared.silentStreamCut) {
          sink.end();
        } else if (sse) {
          // Start on an event boundary so the error cannot merge into a half-sent event.
          const lastChunk = tail.last();
          const boundary =
            lastChunk !== undefined &&
            lastChunk.length >= 2 &&
            lastChunk[lastChunk.length - 1] === 0x0a &&
            lastChunk[lastChunk.length - 2] === 0x0a;
          sink.write(
            Buffer.from(`${boundary ? '' : '\n\n'}data: ${JSON.stringify(proxyError)}\n\n`),
          );
          sink.end();
        } else {
          sink.destroy(proxyError);
        }
      } finally {
        finish('mid-stream-failure', status, proxyError.code);
      }
    };

    const abortFromClient = () => {
      controller?.abort(clientGone());
    };

    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (request.client.gone) c.abort(clientGone());
      },
      onResponseStart(c, statusCode, responseHeaders) {
        if (phase !== 'waiting') return;
        if (isDrainingRefusal(statusCode, responseHeaders)) {
          pool.reportOutcome(worker.id, 'draining');
          phase = 'done';
          release();
          settle({ kind: 'draining', error: drainingError(worker) });
          c.abort(new Error('discarding a draining refusal'));
          return;
        }
        if ((statusCode >= 500 || statusCode === 429) && canRetry()) {
          pool.reportOutcome(worker.id, statusCode === 429 ? 'success' : 'upstream-5xx');
          phase = 'done';
          release();
          settle({
            kind: 'retry',
            error: new ProxyError('upstream_unavailable', `The worker answered ${statusCode}.`, {
              status: 502,
            }),
          });
          c.abort(new Error('discarding a retried response'));
          return;
        }
        status = statusCode;
        headers = responseHeaders;
        phase = 'headers';
      },
      onResponseData(c, chunk) {
        if (phase === 'done') return;
        if (phase === 'headers') commit();
        tail.push(chunk);
        if (!sink.write(chunk)) pause(c);
      },
      onResponseEnd() {
        if (phase === 'done') return;
        if (phase === 'headers') commit();
        sink.end();
        pool.reportOutcome(worker.id, status >= 500 ? 'upstream-5xx' : 'success');
        finish('ok', status);
      },
      onResponseError(_c, error: Error & { code?: string }) {
        if (phase === 'done') return;
        if (request.client.gone) {
          if (phase === 'committed') {
            sink.destroy(error);
            finish('client-abort', 499, 'client_closed_request');
          } else {
            // Not committed: the caller records the request.
            phase = 'done';
            release();
            settle({ kind: 'failed', error: clientGone() });
          }
          return;
        }
        if (phase === 'committed') {
          midStreamFailure(error);
          return;
        }
        const { outcome, proxyError } = classify(error, worker);
        preCommitFailure(proxyError, outcome);
      },
    };

    request.client.onGone(abortFromClient);
    try {
      shared.pools.get(worker.baseUrl).dispatch(
        {
          path: request.path,
          method: 'POST',
          body: request.body,
          headers: upstreamHeaders(request, worker),
        },
        handler,
      );
    } catch (error) {
      preCommitFailure(classify(error as Error, worker).proxyError, 'connect-error');
    }
  });
}
