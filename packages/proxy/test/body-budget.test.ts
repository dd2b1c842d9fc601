import { describe, expect, it } from 'vitest';
import { BODY_MEMORY_FACTOR, createBodyBudget } from '../src/body-budget.js';
import type { ProxyError } from '../src/errors.js';

/** A budget of `limit` body bytes waiting at most `waitMs`. */
function budgetOf(limit: number, waitMs = 5_000) {
  return createBodyBudget(limit * BODY_MEMORY_FACTOR, waitMs, 5);
}

/** Follow a take: 'granted', the refusal's code, or 'waiting' (after pending microtasks). */
function follow(take: Promise<void>) {
  let state = 'waiting';
  take.then(
    () => (state = 'granted'),
    (error: ProxyError) => (state = error.code),
  );
  return () => state;
}

const settled = () => new Promise((resolve) => setImmediate(resolve));

describe('createBodyBudget', () => {
  it('grants a take that fits at once, even while a larger one waits', async () => {
    const budget = budgetOf(100);
    expect(budget.tryTake(60)).toBe(true);
    const large = follow(budget.take(50, undefined, 0));
    const small = follow(budget.take(30, undefined, 0));
    await settled();
    expect([large(), small()]).toEqual(['waiting', 'granted']);
    expect(budget.used()).toBe(90);
    budget.release(60);
    await settled();
    expect(large()).toBe('granted');
    expect(budget.used()).toBe(80);
  });

  it('grants waiting takes in arrival order, each whole or not at all', async () => {
    const budget = budgetOf(100);
    expect(budget.tryTake(90)).toBe(true);
    const first = follow(budget.take(60, undefined, 0));
    const second = follow(budget.take(60, undefined, 0));
    budget.release(50);
    await settled();
    // 60 free: the first is granted whole, the second gets none of it.
    expect([first(), second()]).toEqual(['granted', 'waiting']);
    expect(budget.used()).toBe(100);
    budget.release(100);
    await settled();
    expect(second()).toBe('granted');
  });

  it('refuses the youngest waiters at once when waiting bodies alone keep the oldest out', async () => {
    const budget = budgetOf(100);
    // Two bodies hold 30 each (their allowance) and wait for the rest of 100 and of 80.
    expect(budget.tryTake(30)).toBe(true);
    expect(budget.tryTake(30)).toBe(true);
    const oldest = follow(budget.take(70, undefined, 30));
    const youngest = follow(budget.take(50, undefined, 30));
    await settled();
    // 30 + 30 held by waiters + 70 > 100: the youngest gives way, the oldest keeps waiting.
    expect([oldest(), youngest()]).toEqual(['waiting', 'body_budget_exhausted']);
    budget.release(30);
    await settled();
    expect(oldest()).toBe('granted');
  });

  it('keeps waiters that can all be served one after the other', async () => {
    const budget = budgetOf(100);
    expect(budget.tryTake(10)).toBe(true);
    expect(budget.tryTake(10)).toBe(true);
    expect(budget.tryTake(50)).toBe(true);
    // 10 + 10 held by waiters + 70 <= 100: both wait for the 50 being read.
    const first = follow(budget.take(70, undefined, 10));
    const second = follow(budget.take(70, undefined, 10));
    await settled();
    expect([first(), second()]).toEqual(['waiting', 'waiting']);
    budget.release(50);
    await settled();
    expect([first(), second()]).toEqual(['granted', 'waiting']);
    budget.release(80);
    await settled();
    expect(second()).toBe('granted');
  });

  it('refuses at once what can never fit, or anything when there is no wait', async () => {
    const budget = budgetOf(100);
    // A body holding 30 that needs 80 more can never fit in 100.
    expect(budget.tryTake(30)).toBe(true);
    const never = follow(budget.take(80, undefined, 30));
    const noWait = budgetOf(100, 0);
    expect(noWait.tryTake(90)).toBe(true);
    const refused = follow(noWait.take(20));
    await settled();
    expect([never(), refused()]).toEqual(['body_budget_exhausted', 'body_budget_exhausted']);
  });

  it('refuses after its wait, and leaves the queue when the signal aborts', async () => {
    const budget = budgetOf(100, 50);
    expect(budget.tryTake(100)).toBe(true);
    const timedOut = follow(budget.take(10));
    const controller = new AbortController();
    const aborted = follow(budget.take(10, controller.signal));
    controller.abort(new Error('gone'));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(timedOut()).toBe('body_budget_exhausted');
    expect(aborted()).toBe(undefined);
    budget.release(100);
    expect(budget.used()).toBe(0);
  });
});
