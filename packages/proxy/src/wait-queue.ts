/**
 * The bounded wait of a request for a routable worker of its deployment (`queue.*`): at most
 * `maxLength` waiting per deployment, each until its deadline or until its client leaves.
 */
import type { PoolView } from '@es/pool';
import { ProxyError } from './errors.js';
import type { ResolvedProxyOptions } from './options.js';
import { clientGone } from './request-state.js';
import type { ClientState } from './request-state.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** The bounded per-deployment wait for a routable worker. */
export interface WaitQueue {
  /**
   * Resolves when `deployment` has a routable worker; throws a 503 `ProxyError` when
   * `deadline` (a `performance.now()` time) passes or the queue is full.
   */
  wait(deployment: string, client: ClientState, deadline: number): Promise<void>;
  /** Requests waiting, per deployment. */
  depth(): Record<string, number>;
}

/** A {@link WaitQueue} woken by `pool`'s readiness, bounded by the `queue` options. */
export function createWaitQueue(pool: PoolView, options: ResolvedProxyOptions['queue']): WaitQueue {
  const waiting = new Map<string, number>();
  const unavailable = (code: 'queue_full' | 'no_capacity', message: string) =>
    new ProxyError(code, message, {
      status: 503,
      headers: { 'retry-after': String(options.retryAfterSeconds) },
    });

  return {
    async wait(deployment, client, deadline) {
      const count = waiting.get(deployment) ?? 0;
      const noCapacity = () =>
        unavailable(
          'no_capacity',
          `No worker of ${deployment} became ready within ${options.timeoutMs} ms; try again later.`,
        );
      if (deadline <= performance.now()) throw noCapacity();
      if (count >= options.maxLength) {
        throw unavailable(
          'queue_full',
          `${count} requests are already waiting for ${deployment}; try again later.`,
        );
      }
      waiting.set(deployment, count + 1);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), deadline - performance.now());
      client.onGone(() => controller.abort());
      try {
        for (;;) {
          const ready = await pool.waitForRoutable(deployment, controller.signal);
          if (client.gone) throw clientGone();
          if (!ready || controller.signal.aborted) throw noCapacity();
          if (pool.routable(deployment).length > 0) return;
          // Ready was announced but the worker is gone again: do not spin on it.
          await sleep(10);
        }
      } finally {
        clearTimeout(timer);
        client.onGone(undefined);
        const left = (waiting.get(deployment) ?? 1) - 1;
        if (left === 0) waiting.delete(deployment);
        else waiting.set(deployment, left);
      }
    },
    depth() {
      return Object.fromEntries(waiting);
    },
  };
}
