/**
 * The bounded wait of a request for a routable worker of its deployment (`queue.*`): at most
 * `maxLength` waiting per deployment, each until its deadline or until its client leaves. A
 * deployment that scales from zero waits longer (`queue.coldStartTimeoutMs`): its node may
 * not even be submitted yet, and a model takes minutes to load.
 */
import type { DeploymentView, PoolView } from '@es/pool';
import { ProxyError } from './errors.js';
import type { ResolvedProxyOptions } from './options.js';
import { clientGone } from './request-state.js';
import type { ClientState } from './request-state.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a request may wait: until `at` (a `performance.now()` time). */
export interface WaitDeadline {
  at: number;
  /** The deployment scales from zero: the wait is for a node to start (cold start). */
  coldStart: boolean;
}

/** The bounded per-deployment wait for a routable worker. */
export interface WaitQueue {
  /**
   * The deadline of a request of `deployment` that starts waiting at `from` (a
   * `performance.now()` time): `queue.coldStartTimeoutMs` later for a deployment that scales
   * from zero, `queue.timeoutMs` later otherwise.
   */
  deadline(deployment: DeploymentView, from: number): WaitDeadline;
  /**
   * Resolves when `deployment` has a routable worker; throws a 503 `ProxyError` when the
   * deadline (a `performance.now()` time, or a {@link WaitDeadline}) passes or the queue is
   * full.
   */
  wait(deployment: string, client: ClientState, deadline: number | WaitDeadline): Promise<void>;
  /** Requests waiting, per deployment. */
  depth(): Record<string, number>;
}

/** A {@link WaitQueue} woken by `pool`'s readiness, bounded by the `queue` options. */
export function createWaitQueue(pool: PoolView, options: ResolvedProxyOptions['queue']): WaitQueue {
  const waiting = new Map<string, number>();
  const unavailable = (
    code: 'queue_full' | 'no_capacity',
    message: string,
    retryAfterSeconds: number,
  ) =>
    new ProxyError(code, message, {
      status: 503,
      headers: { 'retry-after': String(retryAfterSeconds) },
    });
  /**
   * Seconds until a node of a cold deployment is expected to be ready, from its view now (the
   * expected start may have come, or moved, while the request waited).
   */
  const coldRetryAfter = (deployment: string): number => {
    const expected = pool.deployments().find((d) => d.name === deployment)?.expectedReadyAt;
    const now = Date.now();
    return expected !== undefined && expected > now
      ? Math.max(1, Math.ceil((expected - now) / 1000))
      : options.retryAfterSeconds;
  };

  return {
    deadline(deployment, from) {
      const coldStart = deployment.scalesFromZero === true;
      return {
        at: from + (coldStart ? options.coldStartTimeoutMs : options.timeoutMs),
        coldStart,
      };
    },
    async wait(deployment, client, given) {
      const { at: deadline, coldStart } =
        typeof given === 'number' ? { at: given, coldStart: false } : given;
      const count = waiting.get(deployment) ?? 0;
      const noCapacity = () => {
        if (!coldStart) {
          return unavailable(
            'no_capacity',
            `No worker of ${deployment} became ready within ${options.timeoutMs} ms; try again later.`,
            options.retryAfterSeconds,
          );
        }
        const retryAfter = coldRetryAfter(deployment);
        return unavailable(
          'no_capacity',
          `Waited ${Math.round(options.coldStartTimeoutMs / 1000)} s for a node of ${deployment} to start (it scales from zero); none is ready yet. Try again in ${retryAfter} s.`,
          retryAfter,
        );
      };
      if (deadline <= performance.now()) throw noCapacity();
      if (count >= options.maxLength) {
        throw unavailable(
          'queue_full',
          `${count} requests are already waiting for ${deployment}; try again later.`,
          coldStart ? coldRetryAfter(deployment) : options.retryAfterSeconds,
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
