/**
 * The lifecycle event log: its listeners and the ring buffer of the most recent events.
 */
import type { PoolEvent, PoolEventListener } from '../registry.js';
import type { PoolEventLog } from '../roles.js';

/** The event log of a registry: `bufferSize` events kept, `at` from `now` by default. */
export function createEventLog(bufferSize: number, now: () => number): PoolEventLog {
  const listeners = new Set<PoolEventListener>();
  const ring: PoolEvent[] = [];
  let ringStart = 0;

  return {
    emit(input) {
      const event: PoolEvent = { ...input, at: input.at ?? now() };
      if (ring.length < bufferSize) ring.push(event);
      else {
        ring[ringStart] = event;
        ringStart = (ringStart + 1) % bufferSize;
      }
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          // A faulty listener must not break the worker protocol or the reconciler.
        }
      }
    },

    on(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    recentEvents(limit = bufferSize) {
      const ordered =
        ring.length < bufferSize ? ring : [...ring.slice(ringStart), ...ring.slice(0, ringStart)];
      return ordered.slice(Math.max(0, ordered.length - limit));
    },
  };
}
