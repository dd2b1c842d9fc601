import { describe, expect, it } from 'vitest';
import type { JobState, WorkerState } from '../src/index.js';
import {
  initialReconcilerState,
  jobDrainDue,
  planJobDrain,
  settleCancel,
  settleSubmission,
  type ReconcileAction,
} from '../src/reconcile/index.js';
import { deployment } from './helpers.js';
import {
  T0,
  World,
  cancels,
  events,
  failure,
  job,
  ofType,
  oneSilentWorker,
  options,
  submits,
  worker,
} from './reconcile-world.js';

describe('planReconcile: counting against maxNodes', () => {
  it('submits the difference, at most maxSubmitsPerTick per tick, counting submissions in flight', () => {
    const w = new World();
    const first = w.tick();
    expect(submits(first)).toHaveLength(2);
    expect(new Set(submits(first).map((s) => s.tag)).size).toBe(2);
    // Still in flight (not settled): they count, one more fills the third slot.
    w.now += 1000;
    expect(submits(w.tick())).toHaveLength(1);
    w.now += 1000;
    expect(submits(w.tick())).toHaveLength(0);
  });

  it.each<[string, JobState[], number]>([
    ['nothing', [], 2],
    ['one pending', ['PENDING'], 2],
    ['configuring + running', ['CONFIGURING', 'RUNNING'], 1],
    ['pending + running + completing', ['PENDING', 'RUNNING', 'COMPLETING'], 0],
    ['requeued (REQUEUED state)', ['REQUEUED', 'RUNNING', 'RUNNING'], 0],
    ['ended jobs do not count', ['COMPLETED', 'FAILED', 'CANCELLED', 'RUNNING'], 2],
  ])('%s %j → %i submissions', (_, states, expected) => {
    const w = new World();
    w.jobs = states.map((s, i) => job(String(100 + i), s));
    expect(submits(w.tick())).toHaveLength(expected);
  });

  it('counts a requeued job back in PENDING: no over-acquisition', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
    w.workers = [worker('3', 0, 'ready')];
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 10_000;
    w.jobs[2] = job('3', 'PENDING', { restartCount: 1, reason: 'BeginTime' });
    const actions = w.tick();
    expect(submits(actions)).toHaveLength(0);
    expect(ofType(actions, 'note-incarnation')).toEqual([
      { type: 'note-incarnation', deployment: 'm', jobId: '3', restartCount: 1 },
    ]);
    expect(ofType(actions, 'end-job')).toMatchObject([{ jobId: '3', restartCount: 0 }]);
    expect(events(actions)).toContain('preempted');
  });

  it('keeps a job SLURM is signalling (SIGNALING, the SIGTERM of a preemption with GraceTime) running: its workers hand over and drain themselves', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
    w.workers = [worker('3', 0, 'ready')];
    w.tick();
    w.now += 1000;
    w.jobs[2] = job('3', 'SIGNALING');
    const signalled = w.tick();
    expect(ofType(signalled, 'end-job')).toEqual([]);
    expect(events(signalled)).not.toContain('preempted');
    expect(events(signalled)).not.toContain('running');
    expect(submits(signalled)).toHaveLength(0);
    // Back to RUNNING (the signal delivered): nothing new either; then the preemption ends it.
    w.now += 1000;
    w.jobs[2] = job('3', 'RUNNING');
    expect(events(w.tick())).toEqual([]);
    w.now += 1000;
    w.jobs[2] = job('3', 'COMPLETING');
    expect(ofType(w.tick(), 'end-job')).toMatchObject([{ jobId: '3' }]);
  });

  it('ignores jobs of other names and releases surplus jobs, pending ones first', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.jobs = [
      job('1', 'RUNNING'),
      job('2', 'PENDING'),
      { ...job('3', 'PENDING'), name: 'es-other-m' },
    ];
    const actions = w.tick();
    expect(submits(actions)).toHaveLength(0);
    expect(cancels(actions)).toEqual([
      { type: 'cancel', jobs: [{ jobId: '2', deployment: 'm', reason: 'more than maxNodes 1' }] },
    ]);
  });
});

describe('planReconcile: a failed list means unknown', () => {
  it('cancels, forgets and submits nothing, but still expires silent workers', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready'), worker('1', 1, 'ready')];
    w.tick();
    w.now += 40_000;
    w.workers[1]!.lastHeartbeat = w.now;
    const actions = w.tick('unknown');
    expect(actions.map((a) => a.type)).toEqual(['worker-gone']);
    expect(w.state.listFailures).toBe(1);
    expect(w.state.jobs['1']?.endedAt).toBeUndefined();
    // Once the list works again, the job is still known and nothing is duplicated: the two
    // submissions of the first tick are still in flight and hold their slots.
    w.now += 1000;
    const after = w.tick();
    expect(submits(after)).toHaveLength(0);
    expect(cancels(after)).toHaveLength(0);
    expect(w.state.listFailures).toBe(0);
  });
});

describe('planReconcile: submission failures', () => {
  it('backs off transient failures with doubling, jitter and a cap', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      const actions = w.tick();
      expect(submits(actions)).toHaveLength(1);
      w.settle(actions, () => failure('transient', 'Socket timed out? no: slurm_load_jobs error'));
      const until = w.state.backoff['m']!.until;
      delays.push(until - w.now);
      w.now += 1;
      expect(submits(w.tick())).toHaveLength(0);
      w.now = until;
    }
    // jitter = 1 in these tests: the delay is the full base.
    expect(delays).toEqual([2000, 4000, 8000, 16000, 32000, 60000, 60000]);
    const actions = w.tick();
    w.settle(actions, () => '77');
    expect(w.state.backoff['m']).toBeUndefined();
  });

  it('applies jitter within half to the full delay', () => {
    const state = settleSubmission(
      {
        ...initialReconcilerState(),
        submissions: { a: { tag: 'a', deployment: 'm', startedAt: 0 } },
      },
      'a',
      { ok: false, failure: { kind: 'transient', ambiguous: false, message: 'x' } },
      0,
      options,
      0,
    );
    expect(state.backoff['m']?.until).toBe(1000);
  });

  it('after a policy refusal waits until one of its jobs leaves (or the slow retry)', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'PENDING')];
    const actions = w.tick();
    w.settle(actions, () => failure('policy', 'QOSMaxSubmitJobPerUserLimit'));
    expect(w.state.backoff['m']).toMatchObject({ kind: 'policy', waitForExit: ['1', '2'] });
    w.now += 60_000;
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 10_000;
    w.jobs = [job('1', 'RUNNING'), job('2', 'CANCELLED')];
    expect(submits(w.tick())).toHaveLength(2);

    const lone = new World();
    lone.deployments = [deployment('m', { maxNodes: 1 })];
    lone.settle(lone.tick(), () => failure('policy', 'AssocMaxJobsLimit'));
    lone.now += options.policyRetryMs - 1;
    expect(submits(lone.tick())).toHaveLength(0);
    lone.now += 1;
    expect(submits(lone.tick())).toHaveLength(1);
  });

  it('stops submitting after a permanent failure and says why', () => {
    const w = new World();
    w.settle(w.tick(), () => failure('permanent', 'invalid partition name specified'));
    expect(w.state.permanent['m']?.message).toBe('invalid partition name specified');
    for (let i = 0; i < 5; i++) {
      w.now += 3_600_000;
      expect(submits(w.tick())).toHaveLength(0);
    }
  });

  it('resolves an ambiguous failure by looking for its tag before submitting again', () => {
    for (const appeared of [true, false]) {
      const w = new World();
      w.deployments = [deployment('m', { maxNodes: 1 })];
      const first = w.tick();
      const tag = submits(first)[0]!.tag;
      w.settle(first, () => failure('transient', 'Socket timed out on send/recv', true));
      // Backoff passes, but the submission still holds its slot until a later list tells.
      w.now += 120_000;
      if (appeared) w.jobs = [job('55', 'PENDING', { tag })];
      const next = w.tick();
      if (appeared) {
        expect(submits(next)).toHaveLength(0);
        expect(w.state.jobs['55']?.tag).toBe(tag);
      } else {
        expect(submits(next)).toHaveLength(1);
      }
    }
  });
});

describe('planReconcile: cancellations in one batched call', () => {
  it('cancels held, never-registered and all-workers-dead jobs together, and replaces them', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 8 })];
    w.jobs = [
      job('1', 'PENDING', { reason: 'launch failed requeued held' }),
      job('2', 'PENDING', { reason: 'JobHeldAdmin' }),
      job('3', 'PENDING', { reason: 'JobHeldUser' }),
      job('4', 'REQUEUE_HOLD'),
      job('5', 'RUNNING'),
      job('6', 'RUNNING'),
      job('7', 'RUNNING'),
      job('8', 'RUNNING'),
    ];
    w.workers = [
      worker('6', 0, 'gone', { reason: 'deregistered' }),
      worker('6', 1, 'failed', { reason: 'engine exited 1' }),
      worker('7', 0, 'ready'),
      worker('7', 1, 'failed'),
      worker('8', 0, 'loading'),
    ];
    let actions = w.tick();
    expect(cancels(actions)).toHaveLength(1);
    expect(cancels(actions)[0]!.jobs.map((j) => j.jobId)).toEqual(['1', '2', '3', '4', '6']);
    // Jobs 1 (launch failed, held) and 6 (every worker failed before ready) failed at launch:
    // their replacements wait for the launch-failure backoff (2 s doubled once, jittered).
    expect(submits(actions)).toEqual([]);
    expect(w.state.launchFailures['m']).toMatchObject({ count: 2, lastJobId: '6' });
    w.now += 3_000;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    actions = w.tick();
    // Then replaced, spaced: 2 per tick.
    expect(submits(actions).map((s) => s.replaces)).toEqual(['1', '2']);
    // Job 5 runs without a worker: cancelled once the start-up limit passes.
    w.now += options.startupTimeoutMs + 1;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    actions = w.tick();
    expect(cancels(actions)).toEqual([
      {
        type: 'cancel',
        jobs: [{ jobId: '5', deployment: 'm', reason: 'no worker registered within 600 s' }],
      },
    ]);
  });

  it('plans a failed cancel again on the next tick', () => {
    const w = new World();
    w.jobs = [job('1', 'REQUEUE_HOLD')];
    const actions = w.tick();
    w.state = settleCancel(
      w.state,
      cancels(actions)[0]!.jobs.map((j) => j.jobId),
      false,
    );
    expect(cancels(w.tick())).toHaveLength(1);
    expect(cancels(w.tick())).toHaveLength(0);
  });

  it('times out a silent worker and cancels its job when it was the last one', () => {
    const w = oneSilentWorker();
    const actions = w.tick();
    expect(ofType(actions, 'worker-gone')).toMatchObject([{ workerId: '1.0.0' }]);
    expect(cancels(actions)[0]?.jobs[0]?.jobId).toBe('1');
    expect(submits(actions)).toMatchObject([{ replaces: '1', reason: 'replacement' }]);
  });
});

describe('planHeartbeatTimeouts: silent workers between ticks', () => {
  it('takes out only workers silent for longer than the timeout, nothing else', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [
      worker('1', 0, 'ready', { lastHeartbeat: T0 - options.heartbeatTimeoutMs - 1 }),
      worker('1', 1, 'ready', { lastHeartbeat: T0 - options.heartbeatTimeoutMs }),
      worker('2', 0, 'gone', { lastHeartbeat: 0 }),
    ];
    const before = w.state;
    expect(w.sweep()).toEqual([
      { type: 'worker-gone', deployment: 'm', workerId: '1.0.0', reason: 'no heartbeat for 30 s' },
    ]);
    expect(w.state.timedOut).toEqual({
      '1.0.0': { lastHeartbeat: T0 - options.heartbeatTimeoutMs - 1, state: 'ready' },
    });
    expect(before.timedOut).toEqual({});
    // Nothing silent: the same state object, no action.
    const state = w.state;
    expect(w.sweep()).toEqual([]);
    expect(w.state).toBe(state);
  });

  it('a worker taken out between ticks has its job cancelled and replaced by the next list', () => {
    const w = oneSilentWorker('loading');
    // Ready, then hung before any tick saw it ready: still not a launch failure.
    w.workers[0]!.state = 'ready';
    expect(ofType(w.sweep(), 'worker-gone')).toMatchObject([{ workerId: '1.0.0' }]);
    w.now += 1000;
    const actions = w.tick();
    expect(ofType(actions, 'worker-gone')).toEqual([]);
    expect(cancels(actions)[0]?.jobs).toMatchObject([{ jobId: '1' }]);
    expect(submits(actions)).toMatchObject([{ replaces: '1', reason: 'replacement' }]);
    expect(w.state.launchFailures).toEqual({});
    expect(w.state.timedOut).toEqual({});
  });

  it('still ends (fences) a silent unlisted job when the timer took its worker out first, across a failed list', () => {
    const w = new World();
    w.workers = [worker('5', 0, 'ready', { registeredAt: T0 - 600_000, lastHeartbeat: T0 })];
    w.tick();
    w.now += options.heartbeatTimeoutMs + 1;
    w.sweep();
    w.now += 1000;
    expect(ofType(w.tick('unknown'), 'end-job')).toEqual([]);
    w.now += 1000;
    const actions = w.tick();
    expect(ofType(actions, 'worker-gone')).toEqual([]);
    expect(ofType(actions, 'end-job')).toMatchObject([
      { jobId: '5', reason: 'job not in the cluster list and its workers are silent' },
    ]);
    // Said once: the next list has nothing left to end.
    w.now += 1000;
    expect(ofType(w.tick(), 'end-job')).toEqual([]);
  });

  it('does not count a worker that registered again after the timer took it out', () => {
    const w = oneSilentWorker();
    w.sweep();
    // SIGCONT: its next heartbeat is answered 404 and it registers again, ready.
    w.now += 1000;
    w.workers = [worker('1', 0, 'ready', { registeredAt: w.now, lastHeartbeat: w.now })];
    const actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    expect(submits(actions)).toEqual([]);
  });
});

describe('planReconcile: drain notices and jobs leaving RUNNING', () => {
  it('keeps the slot of a drained job SLURM will requeue', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready')];
    w.tick();
    w.workers[0]!.state = 'draining';
    expect(submits(w.tick())).toHaveLength(0);
    expect(w.state.jobs['1']?.drainedAt).toBe(w.now);
  });

  it('replaces a drained job in the same tick when it will not be requeued', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 3, cluster: { requeue: false } })];
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready')];
    w.tick();
    w.workers[0]!.state = 'draining';
    expect(submits(w.tick())).toHaveLength(1);
  });

  it('replaces exactly once a drained job that ends COMPLETED (GraceTime)', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready')];
    w.tick();
    w.workers[0]!.state = 'draining';
    w.now += 1000;
    w.tick();
    w.now += 1000;
    w.jobs[0] = job('1', 'COMPLETED');
    let actions = w.tick();
    expect(events(actions)).toContain('preempted');
    expect(submits(actions)).toMatchObject([{ replaces: '1' }]);
    w.settle(actions, () => '9');
    w.now += 1000;
    w.jobs.push(job('9', 'PENDING'));
    actions = w.tick();
    expect(submits(actions)).toHaveLength(0);
    // Later the ended job vanishes from the list: still no second replacement.
    w.jobs.shift();
    w.now += 1000;
    expect(submits(w.tick())).toHaveLength(0);
  });

  it('takes the workers of a job that left RUNNING out of routing at once', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready')];
    w.tick();
    w.jobs = [job('1', 'FAILED', { reason: 'NonZeroExitCode' })];
    const actions = w.tick();
    expect(ofType(actions, 'end-job')).toEqual([
      {
        type: 'end-job',
        deployment: 'm',
        jobId: '1',
        reason: 'job FAILED (NonZeroExitCode)',
        restartCount: 0,
      },
    ]);
    expect(events(actions)).toContain('failed');
    expect(submits(actions)).toMatchObject([{ replaces: '1' }]);
  });
});

describe('planReconcile: jobs the cluster does not list', () => {
  const MANUAL = '900';
  const silentEnd = 'job not in the cluster list and its workers are silent';
  const allCancelled = (a: ReconcileAction[]) =>
    cancels(a).flatMap((c) => c.jobs.map((j) => j.jobId));

  it('keeps a heartbeating manual job past the grace, uncounted, never cancelled or replaced', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.workers = [worker(MANUAL, 0, 'ready', { registeredAt: T0 })];
    // The manual job does not hold a slot: the scheduler fills maxNodes with its own job.
    let actions = w.tick();
    expect(submits(actions)).toHaveLength(1);
    expect(submits(actions)[0]?.replaces).toBeUndefined();
    w.settle(actions, () => '1');
    w.jobs = [job('1', 'RUNNING')];
    w.workers.push(worker('1', 0, 'ready', { registeredAt: T0 }));
    for (let i = 0; i < 30; i++) {
      w.now += 10_000;
      for (const x of w.workers) x.lastHeartbeat = w.now;
      actions = w.tick();
      expect(ofType(actions, 'end-job')).toEqual([]);
      expect(ofType(actions, 'worker-gone')).toEqual([]);
      expect(allCancelled(actions)).toEqual([]);
      expect(submits(actions)).toEqual([]);
    }
    expect(w.now - T0).toBeGreaterThan(options.unlistedGraceMs * 4);
    expect(w.state.jobs[MANUAL]).toBeUndefined();
  });

  it('removes a manual job whose worker goes silent by the heartbeat timeout, without a cancel', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [
      worker('1', 0, 'ready', { registeredAt: T0 }),
      worker(MANUAL, 0, 'ready', { registeredAt: T0 }),
    ];
    w.tick();
    w.now += options.unlistedGraceMs + 10_000;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    expect(ofType(w.tick(), 'end-job')).toEqual([]);
    // Only our job's worker keeps heartbeating.
    w.now += options.heartbeatTimeoutMs + 1;
    w.workers[0]!.lastHeartbeat = w.now;
    const actions = w.tick();
    expect(ofType(actions, 'worker-gone')).toMatchObject([{ workerId: `${MANUAL}.0.0` }]);
    expect(ofType(actions, 'end-job')).toMatchObject([{ jobId: MANUAL, reason: silentEnd }]);
    expect(allCancelled(actions)).toEqual([]);
    expect(submits(actions)).toEqual([]);
  });

  it('ends an unlisted job of ours whose workers are silent (it ended while the scheduler was down)', () => {
    const w = new World();
    // A restarted scheduler: job 5 is no longer listed; its worker's record is stale.
    w.workers = [worker('5', 0, 'ready', { registeredAt: T0 - 600_000, lastHeartbeat: T0 })];
    let actions = w.tick();
    expect(ofType(actions, 'end-job')).toEqual([]);
    w.now += options.heartbeatTimeoutMs + 1;
    actions = w.tick();
    expect(ofType(actions, 'worker-gone')).toMatchObject([{ workerId: '5.0.0' }]);
    expect(ofType(actions, 'end-job')).toMatchObject([{ jobId: '5', reason: silentEnd }]);
    expect(allCancelled(actions)).toEqual([]);
  });

  it('ends at once a job of ours that left the list, even while its worker still heartbeats', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready', { registeredAt: T0 })];
    w.tick();
    w.now += 1000;
    w.jobs = [];
    for (const x of w.workers) x.lastHeartbeat = w.now;
    const actions = w.tick();
    expect(ofType(actions, 'end-job').map((a) => a.reason)).toEqual([
      'job left the cluster',
      'job has ended',
    ]);
    expect(allCancelled(actions)).toEqual([]);
  });
});

describe('planReconcile: time limits', () => {
  it('submits a successor lead time before the end and drains the old node once it is ready', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1, timeLimitMinutes: 60 })];
    w.jobs = [job('1', 'RUNNING', { timeLeftSeconds: 3600 })];
    w.workers = [worker('1', 0, 'ready')];
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 49 * 60_000;
    w.jobs[0]!.timeLeftSeconds = 11 * 60;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 60_000;
    w.jobs[0]!.timeLeftSeconds = 10 * 60;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    let actions = w.tick();
    expect(submits(actions)).toMatchObject([{ replaces: '1', reason: 'time-limit successor' }]);
    const tag = submits(actions)[0]!.tag;
    w.settle(actions, () => '2');
    // The successor runs and loads: the old node keeps serving.
    w.now += 60_000;
    w.jobs.push(job('2', 'RUNNING', { tag }));
    w.workers.push(worker('2', 0, 'loading', { lastHeartbeat: w.now }));
    w.workers[0]!.lastHeartbeat = w.now;
    w.workers[0]!.inFlight = 3;
    actions = w.tick();
    expect(ofType(actions, 'drain-job')).toHaveLength(0);
    expect(submits(actions)).toHaveLength(0);
    // Ready: drain the old one, then cancel it when idle.
    w.now += 5000;
    w.workers[1]!.state = 'ready';
    for (const x of w.workers) x.lastHeartbeat = w.now;
    actions = w.tick();
    expect(ofType(actions, 'drain-job')).toMatchObject([{ jobId: '1' }]);
    w.workers[0]!.state = 'draining';
    w.now += 5000;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    expect(cancels(w.tick())).toHaveLength(0);
    w.workers[0]!.inFlight = 0;
    w.now += 5000;
    for (const x of w.workers) x.lastHeartbeat = w.now;
    actions = w.tick();
    expect(cancels(actions)[0]?.jobs).toEqual([
      { jobId: '1', deployment: 'm', reason: 'time limit: drained for its successor' },
    ]);
    expect(submits(actions)).toHaveLength(0);
  });

  it('retires a job whose limit is shorter than the lead time a quarter of its limit before the end, not as soon as it runs', () => {
    const w = new World();
    // 8 minutes: shorter than the lead time (10 minutes); a quarter of it is 2 minutes.
    w.deployments = [deployment('m', { maxNodes: 1, timeLimitMinutes: 8 })];
    w.jobs = [job('1', 'RUNNING', { timeLeftSeconds: 8 * 60 })];
    w.workers = [worker('1', 0, 'ready')];
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 5 * 60_000 + 59_000;
    w.jobs[0]!.timeLeftSeconds = 2 * 60 + 1;
    w.heartbeat();
    expect(submits(w.tick())).toHaveLength(0);
    w.now += 1_000;
    w.jobs[0]!.timeLeftSeconds = 2 * 60;
    w.heartbeat();
    expect(submits(w.tick())).toMatchObject([{ replaces: '1', reason: 'time-limit successor' }]);
  });
});

describe('planReconcile: a retiring job ends before SLURM kills it', () => {
  it('cancels a drained job still busy 30 s before its limit, so its worker hands over in time', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1, timeLimitMinutes: 8 })];
    w.jobs = [job('1', 'RUNNING', { timeLeftSeconds: 120 })];
    w.workers = [worker('1', 0, 'ready', { inFlight: 3 })];
    const actions = w.tick();
    w.settle(actions, () => '2');
    w.now += 20_000;
    w.jobs[0]!.timeLeftSeconds = 100;
    w.jobs.push(job('2', 'RUNNING', { tag: submits(actions)[0]!.tag }));
    w.workers.push(worker('2', 0, 'ready'));
    w.heartbeat();
    w.drain(w.tick());
    expect(w.workers[0]!.state).toBe('draining');
    // Busy, 40 s after the drain (the grace is 2 min): still finishing its requests.
    w.now += 40_000;
    w.jobs[0]!.timeLeftSeconds = 60;
    w.heartbeat();
    expect(cancels(w.tick())).toEqual([]);
    w.now += 30_000;
    w.jobs[0]!.timeLeftSeconds = 30;
    w.heartbeat();
    expect(cancels(w.tick())[0]?.jobs).toEqual([
      { jobId: '1', deployment: 'm', reason: 'time limit: drained for its successor' },
    ]);
  });
});

describe('planReconcile: adoption after a restart', () => {
  it('adopts running and pending jobs with its name and submits nothing twice', () => {
    const w = new World();
    w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'PENDING', { restartCount: 2 })];
    const actions = w.tick();
    expect(events(actions).filter((e) => e === 'adopted')).toHaveLength(3);
    expect(submits(actions)).toHaveLength(0);
    expect(ofType(actions, 'note-incarnation')).toMatchObject([{ jobId: '3', restartCount: 2 }]);
    expect(cancels(actions)).toHaveLength(0);
  });
});

describe('planReconcile: jobs that fail at launch', () => {
  /** One deployment of 1 node whose every job ends FAILED before a worker registers. */
  function failingWorld(): { w: World; run: (seconds: number) => number } {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    let nextId = 100;
    const run = (seconds: number): number => {
      let submissions = 0;
      for (let i = 0; i < seconds; i++) {
        w.now += 1_000;
        // Jobs submitted last tick ran and failed (the batch script exits 1 at once).
        w.jobs = w.jobs.map((j) =>
          j.state === 'PENDING' ? { ...j, state: 'FAILED', reason: 'NonZeroExitCode' } : j,
        );
        const actions = w.tick();
        w.settle(actions, () => String(nextId++));
        for (const s of submits(actions)) {
          submissions++;
          w.jobs.push(job(String(nextId - 1), 'PENDING', { tag: s.tag }));
        }
      }
      return submissions;
    };
    return { w, run };
  }

  it('backs the replacements off, doubling up to the cap, instead of one per tick', () => {
    const { w, run } = failingWorld();
    // One tick a second for a minute: 2, 4, 8, 16, 32 s waits (jitter 0.5 → ×0.75).
    const submissions = run(60);
    expect(submissions).toBeGreaterThanOrEqual(4);
    expect(submissions).toBeLessThanOrEqual(8);
    const launch = w.state.launchFailures['m']!;
    // Every job but perhaps the one submitted in the last tick has failed and counted.
    expect(launch.count).toBeGreaterThanOrEqual(submissions - 1);
    expect(launch.count).toBeLessThanOrEqual(submissions);
    expect(launch.message).toBe('FAILED (NonZeroExitCode)');
    expect(launch.until).toBeGreaterThan(w.now);
    // The wait never exceeds the cap.
    run(600);
    expect(w.state.launchFailures['m']!.until - w.now).toBeLessThanOrEqual(options.transientMaxMs);
  });

  it('resets once a job of the deployment has a ready worker', () => {
    const { w, run } = failingWorld();
    run(20);
    expect(w.state.launchFailures['m']!.count).toBeGreaterThan(1);
    // The user fixes the set-up: the next job runs and its worker becomes ready.
    w.now += 120_000;
    w.jobs = w.jobs.filter((j) => j.state !== 'PENDING');
    let actions = w.tick();
    expect(submits(actions)).toHaveLength(1);
    w.settle(actions, () => '900');
    w.jobs.push(job('900', 'RUNNING', { tag: submits(actions)[0]!.tag }));
    w.workers = [worker('900', 0, 'ready', { lastHeartbeat: w.now + 1_000 })];
    w.now += 1_000;
    w.tick();
    expect(w.state.launchFailures['m']).toBeUndefined();
    // A later failure of that (once ready) job is not a launch failure: replaced at once.
    w.now += 1_000;
    w.jobs = [job('900', 'FAILED', { tag: w.jobs.at(-1)!.tag })];
    w.workers[0]!.state = 'gone';
    actions = w.tick();
    expect(w.state.launchFailures['m']).toBeUndefined();
    expect(submits(actions)).toMatchObject([{ replaces: '900' }]);
  });

  it('does not count preemption, user holds or jobs that ended before this scheduler saw them', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 3 })];
    // Adopted on the first list, already ended: nothing is known about their launch.
    w.jobs = [job('1', 'FAILED'), job('2', 'PENDING', { reason: 'JobHeldUser' })];
    w.tick();
    expect(w.state.launchFailures['m']).toBeUndefined();
    // A running job preempted (drain notice, then PREEMPTED) before its engines were ready.
    w.jobs = [job('3', 'RUNNING')];
    w.workers = [worker('3', 0, 'loading', { lastHeartbeat: w.now })];
    w.now += 1_000;
    w.tick();
    w.workers[0]!.state = 'draining';
    w.workers[0]!.lastHeartbeat = w.now + 1_000;
    w.now += 1_000;
    w.tick();
    w.jobs = [job('3', 'PREEMPTED')];
    w.now += 1_000;
    w.tick();
    expect(w.state.launchFailures['m']).toBeUndefined();
  });
});

describe('planReconcile: a cancelled job leaves routing before the cancel', () => {
  /** Index of the batched cancel, and of the drain of each job, in the tick's actions. */
  const order = (actions: ReconcileAction[]) => ({
    cancel: actions.findIndex((a) => a.type === 'cancel'),
    drains: Object.fromEntries(
      actions.flatMap((a, i) => (a.type === 'drain-job' ? [[a.jobId, i] as const] : [])),
    ),
  });

  /** Two running jobs, one worker each in `state`, then maxNodes lowered to 1. */
  function lowered(state: WorkerState): ReconcileAction[] {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [worker('1', 0, 'ready')];
    w.tick();
    w.now += 1_000;
    w.deployments = [deployment('m', { maxNodes: 2 })];
    w.jobs.push(job('2', 'RUNNING'));
    w.workers.push(worker('2', 0, state));
    w.heartbeat();
    w.tick();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.now += 1_000;
    w.heartbeat();
    return w.tick();
  }

  it.each<[string, () => ReconcileAction[], Record<string, string>]>([
    [
      'a running job over a lowered maxNodes, worker ready',
      () => lowered('ready'),
      { '2': 'more than maxNodes 1' },
    ],
    ['... worker still loading', () => lowered('loading'), { '2': 'more than maxNodes 1' }],
    ['... worker still starting', () => lowered('starting'), { '2': 'more than maxNodes 1' }],
    ['... worker already draining (a notice)', () => lowered('draining'), {}],
    [
      'a pending job over maxNodes (no worker)',
      () => {
        const w = new World();
        w.deployments = [deployment('m', { maxNodes: 1 })];
        w.jobs = [job('1', 'RUNNING'), job('2', 'PENDING')];
        w.workers = [worker('1', 0, 'ready')];
        return w.tick();
      },
      {},
    ],
    [
      'a held job',
      () => {
        const w = new World();
        w.jobs = [job('1', 'REQUEUE_HOLD')];
        return w.tick();
      },
      {},
    ],
    [
      'a job whose workers all failed',
      () => {
        const w = new World();
        w.jobs = [job('1', 'RUNNING')];
        w.workers = [worker('1', 0, 'failed'), worker('1', 1, 'gone')];
        return w.tick();
      },
      {},
    ],
    ['a job whose last worker times out in this tick', () => oneSilentWorker().tick(), {}],
  ])('%s: drains %j first', (_, run, expected) => {
    const actions = run();
    const { cancel, drains } = order(actions);
    expect(cancel).toBeGreaterThanOrEqual(0);
    expect(Object.keys(drains)).toEqual(Object.keys(expected));
    for (const [jobId, reason] of Object.entries(expected)) {
      expect(drains[jobId]).toBeLessThan(cancel);
      expect(ofType(actions, 'drain-job').find((a) => a.jobId === jobId)?.reason).toBe(reason);
      expect(cancels(actions)[0]?.jobs.find((j) => j.jobId === jobId)?.reason).toBe(reason);
    }
  });

  it('a job lowered away is not replaced; the one kept serves on', () => {
    const actions = lowered('ready');
    expect(cancels(actions)[0]?.jobs.map((j) => j.jobId)).toEqual(['2']);
    expect(submits(actions)).toEqual([]);
  });
});

describe('planJobDrain and planReconcile: jobs operators drain', () => {
  const REASON = 'drained by an operator';

  /** Job 1 running with two ready workers (`inFlight` each), drained by an operator now. */
  function drained(inFlight: [number, number] = [0, 0]): World {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 1 })];
    w.jobs = [job('1', 'RUNNING')];
    w.workers = [
      worker('1', 0, 'ready', { inFlight: inFlight[0] }),
      worker('1', 1, 'ready', { inFlight: inFlight[1] }),
    ];
    w.tick();
    w.now += 1_000;
    w.heartbeat();
    const plan = planJobDrain(w.state, { jobId: '1', deployment: 'm', reason: REASON, now: w.now });
    w.state = plan.state;
    w.drain(plan.actions);
    return w;
  }

  it('takes the workers out of routing at once and remembers the drain (pure)', () => {
    const state = initialReconcilerState();
    const plan = planJobDrain(state, { jobId: '1', deployment: 'm', reason: REASON, now: 5 });
    expect(plan.actions).toEqual([
      { type: 'drain-job', deployment: 'm', jobId: '1', reason: REASON },
    ]);
    expect(plan.state.jobDrains).toEqual({
      '1': { jobId: '1', deployment: 'm', reason: REASON, drainedAt: 5 },
    });
    expect(state.jobDrains).toEqual({});
    // Asked again while the cancel is pending: the grace still runs from the first drain.
    const again = planJobDrain(plan.state, { jobId: '1', deployment: 'm', reason: REASON, now: 9 });
    expect(again.state.jobDrains['1']?.drainedAt).toBe(5);
    expect(again.actions).toHaveLength(1);
  });

  it.each<[string, [number, number], number, 'unknown' | undefined, boolean]>([
    ['idle workers', [0, 0], 0, undefined, true],
    ['a request in flight, within the grace', [0, 1], options.jobDrainGraceMs, undefined, false],
    ['a request in flight, the grace over', [0, 1], options.jobDrainGraceMs + 1, undefined, true],
    ['idle, but the list failed', [0, 0], 0, 'unknown', false],
  ])('%s (after %j in flight, +%i ms): cancelled %s', (_, inFlight, wait, list, cancelled) => {
    const w = drained(inFlight);
    w.now += wait;
    w.heartbeat();
    const actions = w.tick(list);
    expect(cancels(actions).flatMap((c) => c.jobs)).toEqual(
      cancelled ? [{ jobId: '1', deployment: 'm', reason: REASON }] : [],
    );
    // The workers left routing when the operator asked: nothing to drain again.
    expect(ofType(actions, 'drain-job')).toEqual([]);
  });

  it('cancels once idle and replaces the job in the same tick, once', () => {
    const w = drained([2, 0]);
    w.now += 1_000;
    w.heartbeat();
    let actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    expect(submits(actions)).toEqual([]);
    w.workers[0]!.inFlight = 0;
    w.now += 1_000;
    w.heartbeat();
    actions = w.tick();
    expect(cancels(actions)[0]?.jobs).toEqual([{ jobId: '1', deployment: 'm', reason: REASON }]);
    expect(submits(actions)).toMatchObject([{ replaces: '1', reason: 'replacement' }]);
    expect(w.state.jobs['1']).toMatchObject({ cancelReason: REASON });
    w.now += 1_000;
    w.heartbeat();
    actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    expect(submits(actions)).toEqual([]);
  });

  it('plans a failed cancel again on the next tick', () => {
    const w = drained();
    const actions = w.tick();
    expect(cancels(actions)).toHaveLength(1);
    w.state = settleCancel(w.state, ['1'], false);
    w.now += 1_000;
    w.heartbeat();
    expect(cancels(w.tick())[0]?.jobs.map((j) => j.jobId)).toEqual(['1']);
    w.now += 1_000;
    w.heartbeat();
    expect(cancels(w.tick())).toEqual([]);
  });

  it('forgets a drain whose job ended on its own before it was idle: nothing to cancel', () => {
    const w = drained([1, 1]);
    w.now += 1_000;
    w.jobs = [job('1', 'COMPLETED')];
    const actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    expect(w.state.jobDrains).toEqual({});
  });

  it('cancels a drained job the cluster does not list (started by hand), and replaces nothing', () => {
    const w = new World();
    w.deployments = [deployment('m', { maxNodes: 0 })];
    w.workers = [worker('900', 0, 'ready', { registeredAt: T0 })];
    w.tick();
    const plan = planJobDrain(w.state, {
      jobId: '900',
      deployment: 'm',
      reason: REASON,
      now: w.now,
    });
    w.state = plan.state;
    w.drain(plan.actions);
    const actions = w.tick();
    expect(cancels(actions)[0]?.jobs).toEqual([{ jobId: '900', deployment: 'm', reason: REASON }]);
    expect(submits(actions)).toEqual([]);
    // Remembered (no second cancel) until the retention passes, then forgotten.
    w.now += 1_000;
    w.heartbeat();
    expect(cancels(w.tick())).toEqual([]);
    w.now += options.endedRetentionMs + 1;
    w.heartbeat();
    w.tick();
    expect(w.state.jobDrains).toEqual({});
  });

  it.each<[string, WorkerState, number, number, boolean]>([
    ['idle', 'draining', 0, 0, true],
    ['busy', 'draining', 1, 0, false],
    ['busy, grace over', 'draining', 1, options.jobDrainGraceMs + 1, true],
    ['busy but gone', 'gone', 1, 0, true],
    ['busy and failed (its requests are being aborted)', 'failed', 1, 0, false],
  ])('jobDrainDue: %s', (_, state, inFlight, after, due) => {
    const drain = { jobId: '1', deployment: 'm', reason: REASON, drainedAt: T0 };
    expect(jobDrainDue(drain, [worker('1', 0, state, { inFlight })], T0 + after, options)).toBe(
      due,
    );
  });
});
