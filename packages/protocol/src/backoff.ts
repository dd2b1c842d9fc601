/**
 * The one backoff formula of the repository: a delay that doubles per attempt up to a cap,
 * optionally jittered. The reconciler's submission and launch-failure backoff, the worker's
 * engine restarts and the chaos suite's bound on sbatch calls all compute it here.
 */

/**
 * How a delay is spread so that many retriers do not retry in step: `'none'` keeps it,
 * `'equal'` picks it from [half of it, all of it), `'full'` from [0, all of it).
 */
export type BackoffJitter = 'none' | 'equal' | 'full';

/** Options of {@link backoffDelay} (durations in ms). */
export interface BackoffOptions {
  /** The delay of the first attempt; doubled for each later one. */
  initialMs: number;
  /** The most the doubling grows to (jitter applies after the cap). */
  maxMs: number;
  /** How the delay is jittered (default `'none'`). */
  jitter?: BackoffJitter;
  /**
   * A number in [0, 1) that places the delay within the jitter's range (default
   * `Math.random()`); pass one to make the delay reproducible. Unused without jitter.
   */
  random?: number;
}

/**
 * The delay after failure number `attempt` (1, 2, ...): `initialMs × 2^(attempt − 1)`,
 * capped at `maxMs`, then jittered. Not rounded: callers that want whole milliseconds round.
 * @example
 * backoffDelay(3, { initialMs: 2_000, maxMs: 60_000 }); // 8000
 * backoffDelay(9, { initialMs: 2_000, maxMs: 60_000 }); // 60000
 * backoffDelay(3, { initialMs: 2_000, maxMs: 60_000, jitter: 'equal', random: 0 }); // 4000
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const base = Math.min(options.maxMs, options.initialMs * 2 ** (attempt - 1));
  const jitter = options.jitter ?? 'none';
  if (jitter === 'none') return base;
  const random = options.random ?? Math.random();
  return jitter === 'equal' ? base * (0.5 + 0.5 * random) : base * random;
}
