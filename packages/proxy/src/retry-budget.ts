/** Seconds of history the budget looks at. */
const WINDOW_SECONDS = 10;

/** Caps retries so a failing deployment cannot multiply its own load. */
export interface RetryBudget {
  /** Count one incoming request. */
  recordRequest(): void;
  /** Take one retry from the budget; `false` when it is spent. */
  tryRetry(): boolean;
}

/**
 * Retries over the last 10 s may not exceed `ratio` × requests over the same window plus
 * `minPerSecond` × 10 (so a quiet deployment can still retry). Ten one-second buckets: O(1)
 * per request, no timers.
 * @param now clock in milliseconds (injected for tests).
 */
export function createRetryBudget(
  ratio: number,
  minPerSecond: number,
  now: () => number = Date.now,
): RetryBudget {
  const requests = new Float64Array(WINDOW_SECONDS);
  const retries = new Float64Array(WINDOW_SECONDS);
  let currentSecond = Math.floor(now() / 1000);

  const advance = () => {
    const second = Math.floor(now() / 1000);
    if (second === currentSecond) return;
    const steps = Math.min(second - currentSecond, WINDOW_SECONDS);
    for (let k = 1; k <= steps; k++) {
      const slot = (currentSecond + k) % WINDOW_SECONDS;
      requests[slot] = 0;
      retries[slot] = 0;
    }
    currentSecond = second;
  };
  const sum = (values: Float64Array) => values.reduce((a, b) => a + b, 0);

  return {
    recordRequest() {
      advance();
      requests[currentSecond % WINDOW_SECONDS]! += 1;
    },
    tryRetry() {
      advance();
      const allowed = minPerSecond * WINDOW_SECONDS + ratio * sum(requests);
      if (sum(retries) + 1 > allowed) return false;
      retries[currentSecond % WINDOW_SECONDS]! += 1;
      return true;
    },
  };
}
