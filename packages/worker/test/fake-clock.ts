/**
 * A clock whose time moves only when a test says so. Timers fire in due order, each seeing
 * `now()` at its due time. The code under test may set its next timer only after some real
 * I/O (a probe, an HTTP call): `nextTimer` waits, in real time, until one is pending.
 */
import type { Clock } from '../src/index.js';

interface Pending {
  id: number;
  at: number;
  ms: number;
  callback: () => void;
}

export interface FakeClock extends Clock {
  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void;
  /** Delays (ms as set) of the timers pending now, earliest first. */
  pending(): number[];
  /**
   * Resolves with the delay of the earliest pending timer matching `test` once there is one
   * (polling in real time, up to `timeoutMs`).
   */
  nextTimer(test?: (ms: number) => boolean, timeoutMs?: number): Promise<number>;
  /** Waits for the next pending timer matching `test` and moves time to it (firing it). */
  fireNext(test?: (ms: number) => boolean, timeoutMs?: number): Promise<number>;
}

export function createFakeClock(start = 1_000_000): FakeClock {
  let now = start;
  let nextId = 1;
  const timers = new Map<number, Pending>();
  const ordered = () => [...timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  const clock: FakeClock = {
    now: () => now,
    setTimeout(callback, ms) {
      const id = nextId++;
      timers.set(id, { id, at: now + Math.max(0, ms), ms, callback });
      return id;
    },
    clearTimeout(handle) {
      timers.delete(handle as number);
    },
    advance(ms) {
      const target = now + ms;
      for (;;) {
        const due = ordered().find((timer) => timer.at <= target);
        if (!due) break;
        timers.delete(due.id);
        now = due.at;
        due.callback();
      }
      now = target;
    },
    pending: () => ordered().map((timer) => timer.ms),
    async nextTimer(test = () => true, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = ordered().find((timer) => test(timer.ms));
        if (found) return found.ms;
        if (Date.now() > deadline) {
          throw new Error(
            `fake clock: no matching timer within ${timeoutMs} ms (${clock.pending().join(', ')} pending)`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    async fireNext(test = () => true, timeoutMs = 10_000) {
      await clock.nextTimer(test, timeoutMs);
      const found = ordered().find((timer) => test(timer.ms));
      if (!found) throw new Error('fake clock: the timer went away');
      clock.advance(found.at - now);
      return found.ms;
    },
  };
  return clock;
}
