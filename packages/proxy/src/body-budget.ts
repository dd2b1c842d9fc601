import { ProxyError } from './errors.js';

/**
 * One budget of bytes shared by every request body the proxy holds in memory at once. A body
 * that does not fit waits (its socket is not read meanwhile, so the kernel and the client
 * hold the bytes, not this process) until earlier bodies are released, or fails with 503.
 */
export interface BodyBudget {
  /** Take `bytes` now if they fit (and nobody waits before); false otherwise. */
  tryTake(bytes: number): boolean;
  /**
   * Take `bytes`, waiting in arrival order for them to fit; rejects with a 503 `ProxyError`
   * (`body_budget_exhausted`, `Retry-After`) after the budget's wait, or when `signal` aborts.
   */
  take(bytes: number, signal?: AbortSignal): Promise<void>;
  /** Give back bytes taken before. */
  release(bytes: number): void;
  /** Bytes taken now. */
  used(): number;
}

interface Waiter {
  bytes: number;
  grant: () => void;
}

/**
 * What one byte of a JSON body costs in memory while its request runs: the bytes, their
 * text, the parsed fields and the body sent upstream (measured on a real scheduler: 8
 * concurrent 30 MB chat bodies counted once each grew it by 445 MB).
 */
export const BODY_MEMORY_FACTOR = 4;

/**
 * A {@link BodyBudget} of `limitBytes` of memory, each body byte charged
 * {@link BODY_MEMORY_FACTOR} times; a body waits at most `waitMs` for room, then gets a
 * 503 with `Retry-After: retryAfterSeconds`.
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
  const exhausted = () =>
    new ProxyError(
      'body_budget_exhausted',
      `The proxy is holding ${Math.round((used * BODY_MEMORY_FACTOR) / 1024 / 1024)} MiB for request bodies ` +
        `(budget ${Math.round(limitBytes / 1024 / 1024)} MiB) and no room freed within ${waitMs} ms; try again later.`,
      // The body was not read: the connection cannot carry another request.
      { status: 503, headers: { 'retry-after': String(retryAfterSeconds), connection: 'close' } },
    );
  const grantWaiting = () => {
    while (waiters.length > 0 && used + waiters[0]!.bytes <= limit) {
      const waiter = waiters.shift()!;
      used += waiter.bytes;
      waiter.grant();
    }
  };
  const budget: BodyBudget = {
    tryTake(bytes) {
      if (waiters.length > 0 || used + bytes > limit) return false;
      used += bytes;
      return true;
    },
    take(bytes, signal) {
      if (budget.tryTake(bytes)) return Promise.resolve();
      if (waitMs === 0 || bytes > limit) return Promise.reject(exhausted());
      return new Promise((resolve, reject) => {
        const leave = (error: unknown) => {
          const index = waiters.indexOf(waiter);
          if (index >= 0) waiters.splice(index, 1);
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          // A large waiter that leaves may unblock smaller ones behind it.
          grantWaiting();
          reject(error);
        };
        const onAbort = () => leave(signal?.reason);
        const timer = setTimeout(() => leave(exhausted()), waitMs);
        const waiter: Waiter = {
          bytes,
          grant: () => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        waiters.push(waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    },
    release(bytes) {
      used = Math.max(0, used - bytes);
      grantWaiting();
    },
    used: () => used,
  };
  return budget;
}
