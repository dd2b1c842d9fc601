/**
 * Phase 2 of a relayed generation: after a cut, continue it on other ready workers of the
 * deployment (a fresh one first, after a while one already tried), each continuation built
 * from the ids generated so far and spliced into the same response, until the generation
 * ends or cannot go on (no worker within the deadline, the retry budget, the limit of
 * continuations).
 */
import type { RoutableWorker } from '@es/pool';
import { ProxyError } from '../errors.js';
import type { ContinuationRecord } from '../options.js';
import { upstreamHeaders } from '../upstream.js';
import { interrupted, streamAttempt } from './attempt.js';
import type { AttemptResult, CutReason } from './attempt.js';
import { continuationBody, textContinuation } from './plan.js';
import type { Relay } from './relay.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** After this long without a fresh worker, a continuation may go to one already tried. */
const REUSE_AFTER_MS = 1_000;

/** The pause after a continuation that could not start, before the next try. */
const RETRY_PAUSE_MS = 100;

/** Phase 2: continue on other workers until the generation ends or cannot go on. */
export async function continueAfter(
  relay: Relay,
  cutWorker: RoutableWorker,
  reason: CutReason,
  error: Error,
): Promise<void> {
  const { shared, request, stitcher } = relay;
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
      generatedTokens: stitcher.generated,
    };
    const give = (why: string, message: string) => {
      report(relay, { ...base, outcome: 'failed', reason: why });
      relay.endWithError(
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
      report(relay, { ...base, outcome: 'refused', reason: 'engine' });
      return relay.endWithError(interrupted(cause.error), 'mid-stream-failure');
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
      if (request.client.gone) return relay.clientLeft(from);
      if (tries > 0) await sleep(RETRY_PAUSE_MS);
      to = await pickForContinuation(relay, tried, cutAt, deadline);
      if (to === undefined) {
        if (request.client.gone) return relay.clientLeft(from);
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
      if (relay.plan.path === 'ids') {
        const detokenized = await detokenize(relay, to);
        if (detokenized === undefined) continue;
        // The worker may have left routing while /detokenize answered: pick again.
        const chosen = to;
        if (!shared.pool.routable(request.deployment.name).some((w) => w.id === chosen.id)) {
          continue;
        }
        stitcher.takeUp(detokenized);
      } else stitcher.takeUpText();
      const left = stitcher.tokensLeft;
      if (left !== undefined && left <= 0) {
        // Nothing left to generate: the generation ended exactly at the cut.
        relay.write(stitcher.finishByProxy());
        report(relay, { ...base, toWorker: to.id, ...outcome(relay, cause.reason) });
        return relay.complete(to);
      }
      stitcher.splice();
      const splicedAt = { cutAt, firstAt: undefined as number | undefined };
      const model = request.deployment.modelNames[0] ?? request.model;
      const scratch = shared.continueFromScratch;
      const upstream =
        relay.plan.path === 'ids'
          ? {
              path: '/v1/completions',
              body: continuationBody(
                relay.plan,
                model,
                stitcher.promptIds!,
                scratch ? [] : stitcher.ids,
              ),
            }
          : textContinuation(
              relay.plan,
              model,
              scratch ? '' : stitcher.emitted,
              scratch ? 0 : stitcher.generated,
            );
      const result = await streamAttempt(
        relay,
        to,
        upstream.path,
        upstream.body,
        () => false,
        splicedAt,
      );
      const waitMs =
        splicedAt.firstAt === undefined ? undefined : splicedAt.firstAt - splicedAt.cutAt;
      if (result.kind === 'retry' || result.kind === 'failed' || result.kind === 'draining') {
        // The continuation never started: the same splice on another worker.
        stitcher.unsplice();
        shared.logger?.warn(
          { requestId: request.requestId, workerId: to.id, code: result.error.code },
          `continuation could not start: ${result.error.message}`,
        );
        continue;
      }
      report(relay, {
        ...base,
        toWorker: to.id,
        ...(waitMs === undefined ? {} : { waitMs }),
        ...outcome(relay, cause.reason),
      });
      next = result;
    }
    if (next.kind !== 'cut') return;
    from = to!;
    cause = { reason: next.reason, error: next.error };
  }
}

function outcome(
  relay: Relay,
  reason: CutReason,
): { outcome: 'continued' | 'inexact'; reason: string } {
  const inexact = [...relay.stitcher.inexact];
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
async function pickForContinuation(
  relay: Relay,
  tried: Set<string>,
  cutAt: number,
  deadline: number,
): Promise<RoutableWorker | undefined> {
  const { shared, request } = relay;
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
      await sleep(50);
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
async function detokenize(relay: Relay, worker: RoutableWorker): Promise<string | undefined> {
  const { shared, request, stitcher } = relay;
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

function report(relay: Relay, record: ContinuationRecord): void {
  const { shared } = relay;
  try {
    shared.onContinuation?.(record);
  } catch (error) {
    shared.logger?.warn({ err: error }, 'onContinuation threw');
  }
}
