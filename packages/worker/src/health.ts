/**
 * The health of one engine instance as a pure state machine: state + event → next state +
 * actions. No I/O and no timers: the engine supervisor feeds it probe results and exits
 * (with the time they happened) and carries out the actions it returns.
 *
 * ```
 * starting ─launched→ loading ─probe ok→ ready ─n probes fail→ unready ─probe ok→ ready
 *                        ▲                 │ silent ≥ hungRestartMs: kill  │
 *                        └─launched─ restarting ◄─exited (backoff)─────────┘
 *                                      exited, unstartable or too many crashes → failed
 * ```
 */
import { backoffDelay, type ReportedState } from '@es/protocol';

/** The numbers the machine decides with (see `WorkerOptions` for their meaning). */
export interface HealthPolicy {
  probeIntervalMs: number;
  livenessFailures: number;
  livenessTimeoutMs: number;
  hungRestartMs: number;
  restartBackoffMs: number;
  maxRestartBackoffMs: number;
  maxRestarts: number;
  stableAfterMs: number;
  /** The adapter's readiness path, named in the "not answering" reason. */
  readinessPath: string;
}

/**
 * - `starting`: not launched yet. `loading`: launched, readiness probes until the first 2xx.
 * - `ready`: serving; liveness probes. `unready`: was ready, `livenessFailures` probes in a
 *   row failed (reported `loading` so the scheduler stops routing to it).
 * - `restarting`: exited, relaunch after the backoff. `failed`: given up on.
 */
export type HealthPhase = 'starting' | 'loading' | 'ready' | 'unready' | 'restarting' | 'failed';

/** Everything the machine remembers about one instance. */
export interface HealthState {
  phase: HealthPhase;
  /** Consecutive crashes (reset to 1 by a crash after `stableAfterMs` of readiness). */
  crashes: number;
  /** When the current engine process first became ready. */
  readySince: number | undefined;
  /** Why the instance is not ready, reported with every heartbeat; cleared when ready. */
  reason: string | undefined;
  /** Liveness probes failed in a row. */
  failures: number;
  /** Time of the first of those failures. */
  silentSince: number | undefined;
}

/** Something that happened to the instance, with the time it happened where time matters. */
export type HealthEvent =
  /** The engine process was started (first start or a restart). */
  | { type: 'launched' }
  /** A probe of the readiness path answered 2xx in time (`ok`), or did not. */
  | { type: 'probed'; ok: boolean; at: number }
  /**
   * The engine process ended: `spawnError` when it could not be spawned at all, else its
   * guard's exit `code` (127: the engine could not be started, its reason in `logFile`) or
   * `signal`.
   */
  | {
      type: 'exited';
      at: number;
      code: number | null;
      signal: string | null;
      spawnError?: string | undefined;
      logFile: string;
    };

/** What the supervisor must do, in order. */
export type HealthAction =
  /** Probe the readiness path in `afterMs`, allowing `timeoutMs` for the answer. */
  | { type: 'probe'; afterMs: number; timeoutMs: number }
  /** First readiness: log it, read the load and report it (wait for both before going on). */
  | { type: 'ready' }
  /** Ready again after failed liveness probes: log it and report it at once. */
  | { type: 'recovered' }
  /** Out of routing (`reason`): log it and report it at once. */
  | { type: 'unready' }
  /** Hung for `silentMs`: SIGKILL the engine's group; its exit restarts it. */
  | { type: 'kill'; silentMs: number }
  /** Given up (`reason`): log it and report it at once. */
  | { type: 'failed' }
  /** Crashed (`reason`): log it, report it at once and launch again in `afterMs`. */
  | { type: 'restart'; afterMs: number };

/**
 * The policy for `options` (the `WorkerOptions` of the same names), with the worker's
 * defaults for what they leave out.
 */
export function healthPolicy(
  options: Partial<Omit<HealthPolicy, 'readinessPath'>>,
  readinessPath: string,
): HealthPolicy {
  return {
    probeIntervalMs: options.probeIntervalMs ?? 1_000,
    livenessFailures: options.livenessFailures ?? 3,
    livenessTimeoutMs: options.livenessTimeoutMs ?? 2_000,
    hungRestartMs: options.hungRestartMs ?? 60_000,
    restartBackoffMs: options.restartBackoffMs ?? 1_000,
    maxRestartBackoffMs: options.maxRestartBackoffMs ?? 30_000,
    maxRestarts: options.maxRestarts ?? 5,
    stableAfterMs: options.stableAfterMs ?? 60_000,
    readinessPath,
  };
}

/** A transition's result. */
export interface HealthStep {
  state: HealthState;
  actions: HealthAction[];
}

/** Exit code of the engine guard when the engine could not be started at all. */
export const GUARD_SPAWN_FAILED = 127;

/** After a failed liveness probe the next follows at once: a hang shows within 3 timeouts. */
const RETRY_PROBE_MS = 50;

/** The state of an instance that was never launched. */
export function initialHealth(): HealthState {
  return {
    phase: 'starting',
    crashes: 0,
    readySince: undefined,
    reason: undefined,
    failures: 0,
    silentSince: undefined,
  };
}

/** The state the scheduler is told: `ready` and `failed` as they are, anything else `loading`. */
export function reportedState(
  state: HealthState,
): Extract<ReportedState, 'loading' | 'ready' | 'failed'> {
  return state.phase === 'ready' || state.phase === 'failed' ? state.phase : 'loading';
}

/**
 * The pure transition function.
 * @example
 * const { state, actions } = nextHealth(policy, initialHealth(), { type: 'launched' });
 * // state.phase === 'loading'; actions: [{ type: 'probe', afterMs: 1000, timeoutMs: 1000 }]
 */
export function nextHealth(
  policy: HealthPolicy,
  state: HealthState,
  event: HealthEvent,
): HealthStep {
  switch (event.type) {
    case 'launched':
      return {
        state: {
          ...state,
          phase: 'loading',
          readySince: undefined,
          failures: 0,
          silentSince: undefined,
        },
        actions: [readinessProbe(policy)],
      };
    case 'probed':
      if (state.phase === 'loading') return readiness(policy, state, event.ok, event.at);
      if (state.phase === 'ready' || state.phase === 'unready') {
        return liveness(policy, state, event.ok, event.at);
      }
      // A probe of an engine that is gone or given up on: nothing to do.
      return { state, actions: [] };
    case 'exited':
      return exited(policy, state, event);
  }
}

function readinessProbe(policy: HealthPolicy): HealthAction {
  return {
    type: 'probe',
    afterMs: policy.probeIntervalMs,
    timeoutMs: Math.max(policy.probeIntervalMs, 1000),
  };
}

function livenessProbe(policy: HealthPolicy, afterMs: number): HealthAction {
  return { type: 'probe', afterMs, timeoutMs: policy.livenessTimeoutMs };
}

function readiness(policy: HealthPolicy, state: HealthState, ok: boolean, at: number): HealthStep {
  if (!ok) return { state, actions: [readinessProbe(policy)] };
  return {
    state: { ...state, phase: 'ready', readySince: at, reason: undefined },
    actions: [{ type: 'ready' }, livenessProbe(policy, policy.probeIntervalMs)],
  };
}

/**
 * Once ready, the engine keeps being probed: a hung engine (it accepts connections, never
 * answers) leaves routing after `livenessFailures` probes, comes back at the first good
 * one, and is killed (then restarted as after a crash) once silent for `hungRestartMs`.
 */
function liveness(policy: HealthPolicy, state: HealthState, ok: boolean, at: number): HealthStep {
  if (ok) {
    const back = state.phase !== 'ready';
    return {
      state: {
        ...state,
        phase: 'ready',
        reason: back ? undefined : state.reason,
        failures: 0,
        silentSince: undefined,
      },
      actions: [
        ...(back ? [{ type: 'recovered' } as const] : []),
        livenessProbe(policy, policy.probeIntervalMs),
      ],
    };
  }
  const failures = state.failures + 1;
  const silentSince = state.silentSince ?? at;
  const next: HealthState = { ...state, failures, silentSince };
  const actions: HealthAction[] = [];
  if (failures === policy.livenessFailures) {
    next.phase = 'unready';
    next.reason = `engine not answering ${policy.readinessPath} (${failures} probes in a row)`;
    actions.push({ type: 'unready' });
  }
  if (at - silentSince >= policy.hungRestartMs) {
    actions.push({ type: 'kill', silentMs: at - silentSince });
  } else {
    actions.push(livenessProbe(policy, RETRY_PROBE_MS));
  }
  return { state: next, actions };
}

function exited(
  policy: HealthPolicy,
  state: HealthState,
  event: Extract<HealthEvent, { type: 'exited' }>,
): HealthStep {
  const stable =
    state.readySince !== undefined && event.at - state.readySince >= policy.stableAfterMs;
  const crashes = stable ? 1 : state.crashes + 1;
  const unstartable = event.spawnError !== undefined || event.code === GUARD_SPAWN_FAILED;
  const what =
    event.spawnError !== undefined
      ? `could not start: ${event.spawnError}`
      : event.code === GUARD_SPAWN_FAILED
        ? `could not start (see ${event.logFile})`
        : `exited (${event.signal ?? `code ${String(event.code)}`})`;
  const base = { ...state, crashes, failures: 0, silentSince: undefined };
  // A missing executable will not appear by retrying.
  if (unstartable || crashes > policy.maxRestarts) {
    return {
      state: {
        ...base,
        phase: 'failed',
        reason: `engine ${what}; not restarting after ${crashes} failure(s)`,
      },
      actions: [{ type: 'failed' }],
    };
  }
  const delay = backoffDelay(crashes, {
    initialMs: policy.restartBackoffMs,
    maxMs: policy.maxRestartBackoffMs,
  });
  return {
    state: {
      ...base,
      phase: 'restarting',
      reason: `engine ${what}; restart ${crashes}/${policy.maxRestarts} in ${delay} ms`,
    },
    actions: [{ type: 'restart', afterMs: delay }],
  };
}
