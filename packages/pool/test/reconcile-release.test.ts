import { describe, expect, it } from 'vitest';
import {
  settleRelease,
  waitsForRequeueDelay,
  type ReconcileAction,
} from '../src/reconcile/index.js';
import { deployment } from './helpers.js';
import {
  World,
  cancels,
  events,
  job,
  ofType,
  options,
  submits,
  worker,
} from './reconcile-world.js';

const releases = (a: ReconcileAction[]) => ofType(a, 'release');

/** Three running jobs with a ready worker each; job 3 was preempted and requeued. */
function preemptedWorld(): World {
  const w = new World();
  w.jobs = [job('1', 'RUNNING'), job('2', 'RUNNING'), job('3', 'RUNNING')];
  w.workers = [worker('1', 0, 'ready'), worker('2', 0, 'ready'), worker('3', 0, 'ready')];
  w.tick();
  w.now += 5_000;
  w.heartbeat();
  w.jobs[2] = job('3', 'PENDING', { restartCount: 1, reason: 'BeginTime' });
  return w;
}

describe('waitsForRequeueDelay', () => {
  it.each([
    ['a requeued job waiting for its begin time', 'PENDING', 'BeginTime', 1, true],
    ['a job a user gave a begin time (never requeued)', 'PENDING', 'BeginTime', 0, false],
    ['a requeued job waiting for a node', 'PENDING', 'Resources', 1, false],
    [
      'a requeued job held after a failed launch',
      'PENDING',
      'launch failed requeued held',
      1,
      false,
    ],
    ['a running job', 'RUNNING', '', 1, false],
  ] as const)('%s: %s', (_, state, reason, restartCount, expected) => {
    expect(waitsForRequeueDelay({ state, reason, restartCount })).toBe(expected);
  });
});

describe('planReconcile: requeued jobs are released from their begin time', () => {
  it('releases a requeued job once per incarnation, in one batched action, and submits nothing', () => {
    const w = preemptedWorld();
    w.jobs.push(job('4', 'PENDING', { restartCount: 2, reason: 'BeginTime' }));
    w.deployments = [deployment('m', { maxNodes: 4 })];
    const actions = w.tick();
    expect(releases(actions)).toEqual([
      {
        type: 'release',
        jobs: [
          { jobId: '3', deployment: 'm' },
          { jobId: '4', deployment: 'm' },
        ],
      },
    ]);
    expect(submits(actions)).toEqual([]);
    expect(cancels(actions)).toEqual([]);
    // Released: the next ticks wait for it to start (or for the release timeout).
    w.now += 5_000;
    expect(releases(w.tick())).toEqual([]);
    // It starts, is preempted again: the new incarnation is released again.
    w.jobs[2] = job('3', 'RUNNING', { restartCount: 1 });
    w.now += 5_000;
    w.tick();
    w.jobs[2] = job('3', 'PENDING', { restartCount: 2, reason: 'BeginTime' });
    w.now += 5_000;
    expect(releases(w.tick())).toEqual([
      { type: 'release', jobs: [{ jobId: '3', deployment: 'm' }] },
    ]);
  });

  it('leaves a released job that waits for a node alone, however long', () => {
    const w = preemptedWorld();
    expect(releases(w.tick())).toHaveLength(1);
    w.jobs[2] = job('3', 'PENDING', { restartCount: 1, reason: 'Resources' });
    w.now += options.releaseTimeoutMs * 10;
    w.heartbeat();
    const actions = w.tick();
    expect(cancels(actions)).toEqual([]);
    expect(submits(actions)).toEqual([]);
  });

  it('cancels and replaces a job whose release was refused, never holding more than maxNodes', () => {
    const w = preemptedWorld();
    const [release] = releases(w.tick());
    w.state = settleRelease(
      w.state,
      release!.jobs.map((j) => j.jobId),
      {
        kind: 'permanent',
        ambiguous: false,
        message: 'scontrol failed (exit 1): slurm_update error: Access/permission denied',
      },
    );
    w.now += 2_000;
    const actions = w.tick();
    expect(cancels(actions)).toEqual([
      {
        type: 'cancel',
        jobs: [
          {
            jobId: '3',
            deployment: 'm',
            reason:
              'requeue delay: release refused (scontrol failed (exit 1): slurm_update error: Access/permission denied); replaced',
          },
        ],
      },
    ]);
    // 2 running + 1 submission: the driver cancels before it submits, and submits no
    // replacement whose predecessor's cancel failed (reconciler.test.ts).
    expect(submits(actions)).toMatchObject([{ replaces: '3', reason: 'replacement' }]);
    expect(releases(actions)).toEqual([]);
    // While the cancelled job is still listed, nothing more is submitted.
    w.now += 2_000;
    expect(submits(w.tick())).toEqual([]);
  });

  it('releases again after a transient failure (the controller did not answer)', () => {
    const w = preemptedWorld();
    const [release] = releases(w.tick());
    w.state = settleRelease(
      w.state,
      release!.jobs.map((j) => j.jobId),
      {
        kind: 'transient',
        ambiguous: true,
        message: 'scontrol did not finish within 30000 ms',
      },
    );
    w.now += 2_000;
    const actions = w.tick();
    expect(releases(actions)).toHaveLength(1);
    expect(cancels(actions)).toEqual([]);
  });

  it('cancels and replaces a job still waiting for its begin time after the release timeout', () => {
    const w = preemptedWorld();
    w.tick();
    w.now += options.releaseTimeoutMs - 1;
    w.heartbeat();
    expect(cancels(w.tick())).toEqual([]);
    w.now += 2;
    w.heartbeat();
    const actions = w.tick();
    expect(cancels(actions)[0]?.jobs).toMatchObject([
      {
        jobId: '3',
        reason: expect.stringMatching(/still waiting for its begin time 30 s after the release/),
      },
    ]);
    expect(submits(actions)).toMatchObject([{ replaces: '3' }]);
  });

  it('releases nothing when the option is off: the job keeps its slot and waits', () => {
    const w = preemptedWorld();
    w.planOptions = { ...options, releaseRequeued: false };
    const plan = w.tick();
    expect(releases(plan)).toEqual([]);
    expect(submits(plan)).toEqual([]);
    expect(events(plan)).toContain('preempted');
  });
});
