import { describe, expect, it } from 'vitest';
import { backoffDelay, type BackoffOptions } from '../src/index.js';

const steps = { initialMs: 2_000, maxMs: 60_000 };

describe('backoffDelay', () => {
  it.each<[number, BackoffOptions, number]>([
    [1, steps, 2_000],
    [2, steps, 4_000],
    [5, steps, 32_000],
    [6, steps, 60_000],
    [40, steps, 60_000],
    [3, { initialMs: 1_000, maxMs: 30_000, jitter: 'none', random: 0.9 }, 4_000],
    [3, { ...steps, jitter: 'equal', random: 0 }, 4_000],
    [3, { ...steps, jitter: 'equal', random: 0.5 }, 6_000],
    [6, { ...steps, jitter: 'equal', random: 0.5 }, 45_000],
    [3, { ...steps, jitter: 'full', random: 0 }, 0],
    [3, { ...steps, jitter: 'full', random: 0.25 }, 2_000],
    [6, { ...steps, jitter: 'full', random: 0.5 }, 30_000],
  ])('attempt %i with %o waits %i ms', (attempt, options, expected) => {
    expect(backoffDelay(attempt, options)).toBe(expected);
  });

  it('draws the jitter from Math.random when given no number, within its range', () => {
    for (let i = 0; i < 100; i++) {
      const equal = backoffDelay(2, { ...steps, jitter: 'equal' });
      expect(equal).toBeGreaterThanOrEqual(2_000);
      expect(equal).toBeLessThan(4_000);
      const full = backoffDelay(2, { ...steps, jitter: 'full' });
      expect(full).toBeGreaterThanOrEqual(0);
      expect(full).toBeLessThan(4_000);
    }
  });
});
