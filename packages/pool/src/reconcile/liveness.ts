/**
 * Liveness: workers silent for longer than the heartbeat timeout leave routing. It does not
 * depend on the cluster, so it runs first in every tick (even when the list fails) and, on
 * a timer of its own, between ticks (`planHeartbeatTimeouts`).
 */
import type { WorkerInfo } from '../registry.js';
import { RETIRED } from './job-states.js';
import {
  clone,
  type ReconcileAction,
  type ReconcileOptions,
  type ReconcilePlan,
  type ReconcilerState,
} from './state.js';
import type { Tick } from './tick.js';

type WorkerGone = Extract<ReconcileAction, { type: 'worker-gone' }>;

/** A `worker-gone` action for every worker still in service but silent for longer than the timeout. */
function silentWorkers(
  workers: readonly WorkerInfo[],
  now: number,
  heartbeatTimeoutMs: number,
): WorkerGone[] {
  const gone: WorkerGone[] = [];
  for (const w of workers) {
    if (RETIRED.has(w.state) || now - w.lastHeartbeat <= heartbeatTimeoutMs) continue;
    gone.push({
      type: 'worker-gone',
      deployment: w.deployment,
      workerId: w.id,
      reason: `no heartbeat for ${Math.round((now - w.lastHeartbeat) / 1000)} s`,
    });
  }
  return gone;
}

/** Input of {@link planHeartbeatTimeouts}. */
export interface HeartbeatTimeoutInput {
  now: number;
  /**
   * The registry's workers: all of them, or only those silent for longer than the timeout
   * (`JobLedger.silentWorkers(now - heartbeatTimeoutMs)`, which copies no other): the plan
   * is the same.
   */
  workers: readonly WorkerInfo[];
  state: ReconcilerState;
  options: Pick<ReconcileOptions, 'heartbeatTimeoutMs'>;
}

/**
 * The heartbeat timeouts alone, between ticks (pure). The reconciler checks them on a timer
 * of their own: a tick waits for `provider.list` (squeue), sbatch and scancel, which a busy
 * controller can stretch to tens of seconds, and a hung worker must not stay routable that
 * long. Each silent worker gets a `worker-gone` action and is remembered in
 * `state.timedOut` for the next successful list.
 * @example
 * const { actions, state } = planHeartbeatTimeouts({ now, state: previous, options,
 *   workers: registry.silentWorkers(now - options.heartbeatTimeoutMs) });
 */
export function planHeartbeatTimeouts(input: HeartbeatTimeoutInput): ReconcilePlan {
  const actions = silentWorkers(input.workers, input.now, input.options.heartbeatTimeoutMs);
  if (actions.length === 0) return { state: input.state, actions };
  const next = clone(input.state);
  const byId = new Map(input.workers.map((w) => [w.id, w]));
  for (const a of actions) {
    const w = byId.get(a.workerId);
    if (w !== undefined) next.timedOut[w.id] = { lastHeartbeat: w.lastHeartbeat, state: w.state };
  }
  return { state: next, actions };
}

/**
 * The liveness phase of a tick: a `worker-gone` action for every silent worker, and the
 * workers timing out in this tick (`tick.goneNow`) for the phases after it.
 */
export function timeOutSilentWorkers(tick: Tick): void {
  const { input, next, actions, goneNow, readyWhenTimedOut } = tick;
  for (const a of silentWorkers(
    input.registry.workers,
    tick.now,
    tick.options.heartbeatTimeoutMs,
  )) {
    goneNow.add(a.workerId);
    actions.push(a);
  }
  // Workers the timer between ticks already took out count as timing out in this tick, as
  // what they were then, as long as their record is the one it took out (not one that
  // registered again since).
  for (const w of input.registry.workers) {
    const out = next.timedOut[w.id];
    if (out === undefined || !RETIRED.has(w.state) || out.lastHeartbeat !== w.lastHeartbeat) {
      continue;
    }
    goneNow.add(w.id);
    if (out.state === 'ready') readyWhenTimedOut.add(w.id);
  }
}
