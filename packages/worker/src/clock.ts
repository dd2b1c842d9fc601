/**
 * Time as the worker sees it: the current time and timers. Every interval or deadline that
 * is behaviour (heartbeats, probes, hung-engine restarts, restart backoff, drain grace)
 * goes through one, so tests can drive time instead of waiting for it.
 */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /** Runs `callback` once after `ms`; the handle cancels it. */
  setTimeout(callback: () => void, ms: number): unknown;
  /** Cancels a timer of this clock (an unknown or fired handle is ignored). */
  clearTimeout(handle: unknown): void;
}

/**
 * The real clock: `Date.now()` and Node's timers.
 * @example
 * createWorker({ ...options, clock: systemClock });
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Resolves after `ms` of `clock`'s time. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
