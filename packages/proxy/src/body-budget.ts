import { ProxyError } from './errors.js';

/**
 * One budget of bytes shared by every request body the proxy holds in memory at once. A body
 * that does not fit waits (its socket is not read meanwhile, so the kernel and the client
 * hold the bytes, not this process) until earlier bodies are released, or fails with 503.
 *
 * Takes that fit are granted at once, even while larger ones wait: a small body is never held
 * behind a large body's reservation. Waiting takes are granted in arrival order, each all or
 * nothing, so two large bodies never split the room between them and wait for each other.
 * What a waiting body already holds cannot be freed before it is granted, so when the bytes
 * held by waiting bodies alone would keep the oldest one out, the youngest waiters give way
 * (503 with `Retry-After` at once, their bytes released): the oldest is then granted as soon
 * as the bodies being read or served release theirs, instead of every waiter timing out.
 */
export interface BodyBudget {
  /** Take `bytes` now if they fit; false otherwise. */
  tryTake(bytes: number): boolean;
  /**
   * Take `bytes` all at once, waiting for them to fit; rejects with a 503 `ProxyError`
   * (`body_budget_exhausted`, `Retry-After`) after the budget's wait, when the bytes can never
   * fit, when younger than a waiter that the waiting bodies' bytes keep out, or with
   * `signal`'s reason when it aborts.
   * @param holding bytes the caller already took and keeps while it waits.
   */
  take(bytes: number, signal?: AbortSignal, holding?: number): Promise<void>;
  /** Give back bytes taken before. */
  release(bytes: number): void;
  /** Bytes taken now. */
  used(): number;
}

interface Waiter {
  bytes: number;
  holding: number;
  grant: () => void;
  refuse: (error: ProxyError) => void;
}

/**
 * What one byte of a JSON body costs in memory at its peak: the socket's reads (garbage
 * until the next GC) and the buffer they are copied into, the text JSON.parse reads and the
 * parsed prompt. Measured on the built scheduler (apps/scheduler/test/bounds.e2e.test.ts's
 * 30 MB chat uploads, `process.memoryUsage()` sampled every 20 ms through
 * `NODE_OPTIONS=--require`): one 28.6 MiB body took +59 MiB of external memory and +57 MiB
 * of V8 heap at once, 4.0 times its size. That holds because the body sent upstream is
 * made from the client's bytes (`withMembers`: one copy, not a serialised string and then
 * its bytes) and the plan keeps only the fields a continuation carries. A body over
 * `LARGE_BODY_BYTES` costs less (its prompt is not made into strings): the factor is the
 * bound of the bodies that are parsed whole.
 */
export const BODY_MEMORY_FACTOR = 4;

/**
 * A {@link BodyBudget} of `limitBytes` of memory, each body byte charged
 * {@link BODY_MEMORY_FACTOR} times; a body waits at most `waitMs` for room, then gets a
 * 503 with `Retry-After: retryAfterSeconds`.
 * @example
 * const budget = createBodyBudget(128 * 1024 * 1024, 10_000, 5);
 * await budget.take(bodyBytes);
 * try { await serve(); } finally { budget.release(bodyBytes); }
 */
export function createBodyBudget(
  limitBytes: number,
  waitMs: number,
  retryAfterSeconds: number,
): BodyBudget {
  // Counted in body bytes.
  const limit = Math.floor(limitBytes / BODY_MEMORY_FACTOR);
  let used = 0;
  const waiters: Waiter[] = [];
  const exhausted = (why: string) =>
    new ProxyError(
      'body_budget_exhausted',
      `The proxy is holding ${Math.round((used * BODY_MEMORY_FACTOR) / 1024 / 1024)} MiB for request bodies ` +
        `(budget ${Math.round(limitBytes / 1024 / 1024)} MiB) and ${why}; try again later.`,
      // The body was not read: the connection cannot carry another request.
      { status: 503, headers: { 'retry-after': String(retryAfterSeconds), connection: 'close' } },
    );
  const settle = () => {
    for (let i = 0; i < waiters.length;) {
      const waiter = waiters[i]!;
      if (used + waiter.bytes > limit) {
        i++;
        continue;
      }
      waiters.splice(i, 1);
      used += waiter.bytes;
      waiter.grant();
    }
    const oldest = waiters[0];
    if (oldest === undefined) return;
    let stuck = 0;
    for (const waiter of waiters) stuck += waiter.holding;
    while (waiters.length > 1 && stuck + oldest.bytes > limit) {
      const youngest = waiters.pop()!;
      stuck -= youngest.holding;
      youngest.refuse(exhausted('bodies that arrived earlier wait for the room'));
    }
  };
  const budget: BodyBudget = {
    tryTake(bytes) {
      if (used + bytes > limit) return false;
      used += bytes;
      return true;
    },
    take(bytes, signal, holding = 0) {
      if (budget.tryTake(bytes)) return Promise.resolve();
      if (holding + bytes > limit) {
        return Promise.reject(exhausted('the body is larger than the whole budget'));
      }
      if (waitMs === 0) return Promise.reject(exhausted('no room is free'));
      return new Promise((resolve, reject) => {
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        };
        const leave = (error: unknown) => {
          const index = waiters.indexOf(waiter);
          if (index >= 0) waiters.splice(index, 1);
          done();
          reject(error);
          // A waiter that leaves may unblock others (or stop holding the oldest out).
          settle();
        };
        const onAbort = () => leave(signal?.reason);
        const timer = setTimeout(
          () => leave(exhausted(`no room freed within ${waitMs} ms`)),
          waitMs,
        );
        const waiter: Waiter = {
          bytes,
          holding,
          grant: () => {
            done();
            resolve();
          },
          refuse: (error) => {
            done();
            reject(error);
          },
        };
        waiters.push(waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
        settle();
      });
    },
    release(bytes) {
      used = Math.max(0, used - bytes);
      settle();
    },
    used: () => used,
  };
  return budget;
}
