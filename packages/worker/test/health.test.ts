import { describe, expect, it } from 'vitest';
import { healthPolicy, initialHealth, nextHealth, reportedState } from '../src/health.js';
import type { HealthAction, HealthEvent, HealthPolicy, HealthState } from '../src/health.js';

/** The worker's defaults. */
const policy = healthPolicy({}, '/health');

const T = 1_000_000;
const state = (fields: Partial<HealthState>): HealthState => ({ ...initialHealth(), ...fields });
const exit = (fields: Partial<Extract<HealthEvent, { type: 'exited' }>>): HealthEvent => ({
  type: 'exited',
  at: T,
  code: null,
  signal: null,
  logFile: '/logs/engine-7.0.0.log',
  ...fields,
});
const ok: HealthEvent = { type: 'probed', ok: true, at: T };
const fail: HealthEvent = { type: 'probed', ok: false, at: T };
const readinessProbe: HealthAction = { type: 'probe', afterMs: 1_000, timeoutMs: 1_000 };
const livenessProbe: HealthAction = { type: 'probe', afterMs: 1_000, timeoutMs: 2_000 };
const retryProbe: HealthAction = { type: 'probe', afterMs: 50, timeoutMs: 2_000 };
const NOT_ANSWERING = 'engine not answering /health (3 probes in a row)';

/** A crash that is restarted: the crash count, the reason reported, the backoff. */
const restarts = (crashes: number, reason: string, afterMs: number) => ({
  to: { phase: 'restarting' as const, crashes, reason },
  actions: [{ type: 'restart' as const, afterMs }],
});

interface Row {
  name: string;
  policy?: Partial<HealthPolicy>;
  from: HealthState;
  event: HealthEvent;
  to: Partial<HealthState>;
  actions: HealthAction[];
}

const rows: Row[] = [
  // Launch.
  {
    name: 'first launch: loading, readiness probe after one interval',
    from: initialHealth(),
    event: { type: 'launched' },
    to: { phase: 'loading', crashes: 0, reason: undefined },
    actions: [readinessProbe],
  },
  {
    name: 'relaunch after a crash keeps the crash reason until ready and forgets the old readiness',
    from: state({
      phase: 'restarting',
      crashes: 2,
      readySince: T - 5,
      reason: 'engine exited (code 3); restart 2/5 in 2000 ms',
    }),
    event: { type: 'launched' },
    to: {
      phase: 'loading',
      crashes: 2,
      readySince: undefined,
      reason: 'engine exited (code 3); restart 2/5 in 2000 ms',
    },
    actions: [readinessProbe],
  },
  {
    name: 'readiness probes allow at least 1 s even when polled faster',
    policy: { probeIntervalMs: 50 },
    from: initialHealth(),
    event: { type: 'launched' },
    to: { phase: 'loading' },
    actions: [{ type: 'probe', afterMs: 50, timeoutMs: 1_000 }],
  },
  // Readiness.
  {
    name: 'loading, probe fails: still loading, probe again',
    from: state({ phase: 'loading' }),
    event: fail,
    to: { phase: 'loading', failures: 0 },
    actions: [readinessProbe],
  },
  {
    name: 'loading, probe answers: ready (since now), reason cleared, report with load, liveness probes',
    from: state({
      phase: 'loading',
      crashes: 1,
      reason: 'engine exited (code 3); restart 1/5 in 1000 ms',
    }),
    event: ok,
    to: { phase: 'ready', readySince: T, reason: undefined, crashes: 1 },
    actions: [{ type: 'ready' }, livenessProbe],
  },
  // Liveness.
  {
    name: 'ready, probe answers: nothing to report, next probe after one interval',
    from: state({ phase: 'ready', readySince: T - 10 }),
    event: ok,
    to: { phase: 'ready', readySince: T - 10, failures: 0 },
    actions: [livenessProbe],
  },
  {
    name: 'ready, first failed probe: still ready, silent since now, next probe at once',
    from: state({ phase: 'ready' }),
    event: fail,
    to: { phase: 'ready', failures: 1, silentSince: T },
    actions: [retryProbe],
  },
  {
    name: 'ready, second failed probe: silent since the first',
    from: state({ phase: 'ready', failures: 1, silentSince: T - 2_050 }),
    event: fail,
    to: { phase: 'ready', failures: 2, silentSince: T - 2_050 },
    actions: [retryProbe],
  },
  {
    name: 'ready, third failed probe: out of routing (reported at once), keeps probing',
    from: state({ phase: 'ready', failures: 2, silentSince: T - 4_100 }),
    event: fail,
    to: { phase: 'unready', failures: 3, reason: NOT_ANSWERING },
    actions: [{ type: 'unready' }, retryProbe],
  },
  {
    name: 'unready, more failed probes: reported once only',
    from: state({ phase: 'unready', failures: 3, silentSince: T - 6_000, reason: NOT_ANSWERING }),
    event: fail,
    to: { phase: 'unready', failures: 4, reason: NOT_ANSWERING },
    actions: [retryProbe],
  },
  {
    name: 'unready, probe answers: ready again (reported), counts reset, readiness time kept',
    from: state({
      phase: 'unready',
      readySince: T - 9_000,
      failures: 4,
      silentSince: T - 6_000,
      reason: NOT_ANSWERING,
    }),
    event: ok,
    to: {
      phase: 'ready',
      readySince: T - 9_000,
      failures: 0,
      silentSince: undefined,
      reason: undefined,
    },
    actions: [{ type: 'recovered' }, livenessProbe],
  },
  {
    name: 'unready and silent for hungRestartMs: kill it (its exit restarts it), no more probes',
    from: state({ phase: 'unready', failures: 30, silentSince: T - 60_000, reason: NOT_ANSWERING }),
    event: fail,
    to: { phase: 'unready', failures: 31 },
    actions: [{ type: 'kill', silentMs: 60_000 }],
  },
  {
    name: 'one ms short of hungRestartMs: keep probing',
    from: state({ phase: 'unready', failures: 30, silentSince: T - 59_999, reason: NOT_ANSWERING }),
    event: fail,
    to: { phase: 'unready', failures: 31 },
    actions: [retryProbe],
  },
  {
    name: 'the failure that makes it unready is also the hung one: report, then kill',
    from: state({ phase: 'ready', failures: 2, silentSince: T - 60_000 }),
    event: fail,
    to: { phase: 'unready', failures: 3, reason: NOT_ANSWERING },
    actions: [{ type: 'unready' }, { type: 'kill', silentMs: 60_000 }],
  },
  {
    name: 'hungRestartMs shorter than the failures: killed while still ready',
    policy: { hungRestartMs: 0 },
    from: state({ phase: 'ready' }),
    event: fail,
    to: { phase: 'ready', failures: 1, silentSince: T },
    actions: [{ type: 'kill', silentMs: 0 }],
  },
  {
    name: 'livenessFailures 1: the first failed probe takes it out of routing',
    policy: { livenessFailures: 1 },
    from: state({ phase: 'ready' }),
    event: fail,
    to: {
      phase: 'unready',
      failures: 1,
      reason: 'engine not answering /health (1 probes in a row)',
      silentSince: T,
    },
    actions: [{ type: 'unready' }, retryProbe],
  },
  // Stale probes.
  ...(['starting', 'restarting', 'failed'] as const).map((phase): Row => ({
    name: `${phase}: a probe result is ignored`,
    from: state({ phase, reason: 'r' }),
    event: ok,
    to: { phase, reason: 'r' },
    actions: [],
  })),
  // Exits.
  {
    name: 'exit while loading: restart after the first backoff, reported at once',
    from: state({ phase: 'loading' }),
    event: exit({ code: 3 }),
    ...restarts(1, 'engine exited (code 3); restart 1/5 in 1000 ms', 1_000),
  },
  {
    name: 'death by signal: named, backoff doubles per crash',
    from: state({ phase: 'ready', crashes: 2, readySince: T - 1_000 }),
    event: exit({ signal: 'SIGKILL' }),
    ...restarts(3, 'engine exited (SIGKILL); restart 3/5 in 4000 ms', 4_000),
  },
  {
    name: 'backoff is capped at maxRestartBackoffMs',
    policy: { maxRestarts: 10 },
    from: state({ phase: 'loading', crashes: 5 }),
    event: exit({ code: 1 }),
    ...restarts(6, 'engine exited (code 1); restart 6/10 in 30000 ms', 30_000),
  },
  {
    name: 'the crash after maxRestarts: failed, left alone',
    from: state({ phase: 'loading', crashes: 5 }),
    event: exit({ code: 7 }),
    to: {
      phase: 'failed',
      crashes: 6,
      reason: 'engine exited (code 7); not restarting after 6 failure(s)',
    },
    actions: [{ type: 'failed' }],
  },
  {
    name: 'the guard could not start the engine (127): failed at once, the log named',
    from: state({ phase: 'loading' }),
    event: exit({ code: 127 }),
    to: {
      phase: 'failed',
      crashes: 1,
      reason:
        'engine could not start (see /logs/engine-7.0.0.log); not restarting after 1 failure(s)',
    },
    actions: [{ type: 'failed' }],
  },
  {
    name: 'the guard itself could not be spawned: failed at once',
    from: state({ phase: 'loading' }),
    event: exit({ code: -2, spawnError: 'spawn node ENOENT' }),
    to: {
      phase: 'failed',
      crashes: 1,
      reason: 'engine could not start: spawn node ENOENT; not restarting after 1 failure(s)',
    },
    actions: [{ type: 'failed' }],
  },
  {
    name: 'a crash after stableAfterMs of readiness counts as the first',
    from: state({ phase: 'ready', crashes: 4, readySince: T - 60_000 }),
    event: exit({ code: 3 }),
    ...restarts(1, 'engine exited (code 3); restart 1/5 in 1000 ms', 1_000),
  },
  {
    name: 'a crash 1 ms short of stableAfterMs adds up',
    from: state({ phase: 'ready', crashes: 4, readySince: T - 59_999 }),
    event: exit({ code: 3 }),
    ...restarts(5, 'engine exited (code 3); restart 5/5 in 16000 ms', 16_000),
  },
  {
    name: 'the exit of a killed hung engine: restarted, liveness counts reset',
    from: state({
      phase: 'unready',
      crashes: 0,
      readySince: T - 70_000,
      failures: 31,
      silentSince: T - 60_000,
      reason: NOT_ANSWERING,
    }),
    event: exit({ signal: 'SIGKILL' }),
    to: {
      phase: 'restarting',
      crashes: 1,
      failures: 0,
      silentSince: undefined,
      reason: 'engine exited (SIGKILL); restart 1/5 in 1000 ms',
    },
    actions: [{ type: 'restart', afterMs: 1_000 }],
  },
];

describe('the health state machine', () => {
  it.each(rows)('$name', (row) => {
    const step = nextHealth({ ...policy, ...row.policy }, row.from, row.event);
    expect(step.state).toEqual({ ...row.from, ...row.to });
    expect(step.actions).toEqual(row.actions);
  });

  it('never changes the state it is given', () => {
    for (const row of rows) {
      const from = structuredClone(row.from);
      nextHealth({ ...policy, ...row.policy }, row.from, row.event);
      expect(row.from).toEqual(from);
    }
  });

  it.each([
    ['starting', 'loading'],
    ['loading', 'loading'],
    ['ready', 'ready'],
    ['unready', 'loading'],
    ['restarting', 'loading'],
    ['failed', 'failed'],
  ] as const)('reports %s to the scheduler as %s', (phase, reported) => {
    expect(reportedState(state({ phase }))).toBe(reported);
  });
});
