/**
 * Faults of the shared scheduler's workers: a preemption (with and without a grace period), an
 * engine killed or frozen, a worker daemon killed. The scheduler's own faults are in
 * data-plane-scenarios.ts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { preempt, runSlurm } from '@es/testkit';
import {
  freezeEngineBehind,
  killEngineBehind,
  killPids,
  killWorkerOfJob,
  pidsOfJob,
} from './faults.js';
import type { FaultResult } from './report.js';
import {
  type ChaosContext,
  continuityChecks,
  finish,
  instanceIndex,
  liveWorkers,
  pickVictim,
} from './scenario-kit.js';

/**
 * Preempts one node of ours (a job in partition `high` on it) and checks: no request to a
 * draining worker after its notice, no lost or silently cut request, no over-acquisition,
 * capacity back.
 */
export async function preemptionScenario(
  ctx: ChaosContext,
  options: { highJobSeconds: number; graceTime?: number },
): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers, 'no ready worker to preempt');
  // Restored afterwards: the partition is shared with other test runs.
  const before = /GraceTime=(\d+)/.exec(
    (await runSlurm('scontrol', ['show', 'partition', 'low'])).stdout,
  )?.[1];
  if (options.graceTime !== undefined) {
    await runSlurm('scontrol', ['update', 'partitionname=low', `GraceTime=${options.graceTime}`]);
  }
  const faultAt = Date.now();
  ctx.log?.(`preempting job ${victim.jobId} on ${victim.node}`);
  try {
    await preempt(victim.node, options.highJobSeconds, `${ctx.scheduler.jobName}-preemptor`);
    const jobWorkers = new Set(workers.filter((w) => w.jobId === victim.jobId).map((w) => w.id));
    const notes: string[] = [];
    return await finish(
      ctx,
      options.graceTime === undefined
        ? 'preemption'
        : `preemption (GraceTime ${options.graceTime})`,
      faultAt,
      (e) =>
        (e.workerId !== undefined && jobWorkers.has(e.workerId)) ||
        (e.jobId === victim.jobId && e.event !== 'running'),
      (requests, events) => ({
        // Streams last ~1.6 s: a grace period longer than that lets every one finish.
        ...(options.graceTime !== undefined && options.graceTime >= 5
          ? {
              'streams cut despite the grace period': requests.filter(
                (r) => r.stream && r.outcome === 'error-event',
              ).length,
            }
          : {}),
        // Without a grace period the node's engines die under their streams: each is
        // continued on another worker.
        ...(options.graceTime === undefined ? continuityChecks(requests, events, notes) : {}),
      }),
      notes,
    );
  } finally {
    if (options.graceTime !== undefined) {
      await runSlurm('scontrol', ['update', 'partitionname=low', `GraceTime=${before ?? 0}`]);
    }
  }
}

/** SIGKILLs one engine instance (found by its port) and checks requests and recovery. */
export async function engineKillScenario(ctx: ChaosContext): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers);
  const faultAt = Date.now();
  const pids = await killEngineBehind(victim.port, instanceIndex(victim.id));
  ctx.log?.(`SIGKILLed engine of ${victim.id} (port ${victim.port}, pids ${pids.join(',')})`);
  const notes = [`engine of ${victim.id} on port ${victim.port}`];
  return finish(
    ctx,
    'engine SIGKILL',
    faultAt,
    (e) => e.workerId === victim.id && e.event !== 'ready' && e.event !== 'registered',
    (requests, events) => continuityChecks(requests, events, notes),
    notes,
  );
}

/**
 * Freezes one engine instance (SIGSTOP: it accepts connections, never answers) for
 * `frozenMs`, then thaws it. Checks: nothing lost (requests waiting on it are moved to
 * another worker once its liveness probes fail), streams on it are continued on another
 * worker once they stall longer than the scheduler's `--stall-timeout` (0 streams cut, none
 * restarted from scratch), no hung client; detection is the worker's `unready` event.
 */
export async function engineHangScenario(
  ctx: ChaosContext,
  options: { frozenMs: number },
): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers);
  const faultAt = Date.now();
  const pids = await freezeEngineBehind(victim.port, instanceIndex(victim.id));
  ctx.log?.(`froze engine of ${victim.id} (port ${victim.port}, pids ${pids.join(',')})`);
  try {
    await sleep(options.frozenMs);
  } finally {
    killPids(pids, 'SIGCONT');
  }
  const notes = [`engine of ${victim.id} on port ${victim.port}`];
  return finish(
    ctx,
    `engine hangs (SIGSTOP ${Math.round(options.frozenMs / 1000)} s)`,
    faultAt,
    (e) => e.workerId === victim.id && e.event === 'unready',
    (requests, events) => continuityChecks(requests, events, notes),
    notes,
  );
}

/** SIGKILLs the worker daemon of one job and checks requests, replacement and over-acquisition. */
export async function workerKillScenario(ctx: ChaosContext): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers);
  const faultAt = Date.now();
  const pids = killWorkerOfJob(victim.jobId);
  ctx.log?.(`SIGKILLed worker of job ${victim.jobId} (pids ${pids.join(',')})`);
  const ids = new Set(workers.filter((w) => w.jobId === victim.jobId).map((w) => w.id));
  const notes: string[] = [];
  return finish(
    ctx,
    'worker SIGKILL',
    faultAt,
    (e) =>
      (e.workerId !== undefined && ids.has(e.workerId) && e.event !== 'ready') ||
      (e.jobId === victim.jobId && e.workerId === undefined && e.event !== 'running'),
    (requests, events) => {
      // Engines of the dead worker must not outlive its job (on a GPU node they hold the GPUs).
      const orphans = pidsOfJob(victim.jobId, 'mock-engine');
      killPids(orphans, 'SIGKILL');
      return {
        ...continuityChecks(requests, events, notes),
        'engine processes outliving the job': orphans.length,
      };
    },
    notes,
  );
}
