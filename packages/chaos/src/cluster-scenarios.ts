/**
 * Faults around the shared scheduler: hostile input, slurmctld restarted or frozen, sbatch
 * failing (transient, hanging, policy).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deriveKeys } from '@es/protocol';
import { restartController, withStoppedController } from '@es/testkit';
import { isAlive, killWorkerOfJob, rssBytes } from './faults.js';
import type { SchedulerEvent } from './history.js';
import {
  checkHostileAnswers,
  hostileCorpus,
  sendCorpus,
  slowLoris,
  type HostileAnswer,
} from './hostile.js';
import { maxCallsUnderBackoff, type SbatchMode, type SbatchShim } from './sbatch-shim.js';
import type { FaultResult } from './report.js';
import { type ChaosContext, finish, liveWorkers, pickVictim } from './scenario-kit.js';

/**
 * Sends the hostile corpus (twice) while the load runs and checks: the scheduler and the
 * data-plane processes that receive it first (`es-proxy`, when the scheduler runs one) stay up,
 * every answer is the expected 4xx with an OpenAI-shaped or empty protocol body, and the
 * memory of each comes back near its baseline.
 */
export async function hostileScenario(
  ctx: ChaosContext,
  options: {
    logDir: string;
    model: string;
    /** How long the slow-loris uploads keep dripping (default 15 s; the proxy's body deadline is 30 s). */
    lorisMs?: number;
  },
): Promise<FaultResult & { bad: HostileAnswer[] }> {
  const workerKey = deriveKeys(readFileSync(join(options.logDir, 'secret'), 'utf8')).workerKey;
  const live = (await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey())).find(
    (w) => w.restartCount >= 1,
  );
  // A fresh corpus for each pass: its signed cases are signed when first sent, and the
  // replay case replays its own pass's heartbeat (the second pass's are new requests).
  const corpus = () =>
    hostileCorpus({ model: options.model, workerKey, ...(live ? { liveWorker: live } : {}) });
  const pid = ctx.scheduler.pid;
  const dataPlane = ctx.scheduler.dataPlane()?.workers ?? [];
  const pids = [pid, ...dataPlane];
  const before = new Map(pids.map((p) => [p, rssBytes(p) ?? 0]));
  const faultAt = Date.now();
  const cases = corpus();
  const answers = [
    ...(await sendCorpus(ctx.scheduler.url, cases)),
    ...(await sendCorpus(ctx.scheduler.url, corpus())),
  ];
  const bad = checkHostileAnswers(answers);
  // Slow-loris uploads while the load runs: everyone else must still be served.
  const lorisMs = options.lorisMs ?? 15_000;
  const loris = await slowLoris(ctx.scheduler.url, { connections: 200, durationMs: lorisMs });
  // The lowest of 20 samples over 10 s: a garbage collection may come late, a leak stays.
  const lowest = new Map<number, number | undefined>();
  for (let i = 0; i < 20; i++) {
    await sleep(500);
    for (const p of pids) {
      if (i > 0 && lowest.get(p) === undefined) continue;
      const rss = rssBytes(p);
      lowest.set(p, rss === undefined ? undefined : Math.min(rss, lowest.get(p) ?? rss));
    }
  }
  const after = lowest.get(pid);
  const alive = after !== undefined && isAlive(pid);
  // A data-plane process that died is respawned under another pid: its own is gone.
  const deadPlanes = dataPlane.filter((p) => lowest.get(p) === undefined || !isAlive(p));
  const grown = Math.max(
    ...pids.map((p) => {
      const rss = lowest.get(p);
      return rss === undefined ? Number.POSITIVE_INFINITY : rss - (before.get(p) ?? 0);
    }),
  );
  const result = await finish(
    ctx,
    'hostile input',
    faultAt,
    () => false,
    () => ({
      'scheduler crashes': alive ? 0 : 1,
      'data-plane processes crashed': deadPlanes.length,
      'answers not a clean 4xx': bad.length,
      'memory not back near baseline (>64 MB above)': grown > 64 * 1024 * 1024 ? 1 : 0,
    }),
    [
      `${loris.opened} slow-loris uploads (1 byte/s for ${lorisMs / 1000} s): ${loris.endedByServer} ended by the scheduler, answers ${JSON.stringify(loris.statuses)}`,
      `${answers.length} hostile requests (${cases.length} cases × 2)${live ? '' : '; no requeued worker, stale-incarnation cases skipped'}`,
      `RSS before → after (lowest sample over 10 s): ${pids
        .map((p) => {
          const rss = lowest.get(p);
          return `${p === pid ? 'scheduler' : `es-proxy ${p}`} ${Math.round((before.get(p) ?? 0) / 1e6)} → ${rss === undefined ? '—' : Math.round(rss / 1e6)} MB`;
        })
        .join(', ')}`,
      ...bad.map((a) => `bad answer to "${a.name}": ${a.status} ${a.body.slice(0, 120)}`),
    ],
    () => false,
    false,
  );
  return { ...result, bad };
}

/**
 * Restarts slurmctld (SIGTERM, `downMs` gone, started again from its saved state) under
 * load. Promises: 0 jobs cancelled, 0 workers removed, 0 submissions, serving continues.
 */
export async function controllerRestartScenario(
  ctx: ChaosContext,
  options: { downMs: number },
): Promise<FaultResult> {
  const faultAt = Date.now();
  const { goneMs } = await restartController(options.downMs);
  const backAt = Date.now();
  ctx.log?.(`slurmctld restarted (gone ${goneMs} ms)`);
  const during = (e: SchedulerEvent) => e.time >= faultAt && e.time <= backAt + 5_000;
  return finish(
    ctx,
    `slurmctld restart (${Math.round(options.downMs / 1000)} s down)`,
    faultAt,
    () => false,
    (requests, events) => ({
      'jobs cancelled': events.filter((e) => during(e) && e.event === 'cancelled').length,
      'workers removed': events.filter((e) => during(e) && e.event === 'gone').length,
      submissions: events.filter((e) => during(e) && e.event === 'submitted').length,
      'no request served while it was down':
        requests.filter((r) => r.outcome === 'ok' && r.end < backAt).length > 0 ? 0 : 1,
    }),
    [`controller gone ${goneMs} ms`],
    () => false,
    false,
  );
}

/**
 * Freezes slurmctld (SIGSTOP) for `stopMs` under load: squeue and sbatch hang meanwhile.
 * Promises: 0 jobs cancelled, 0 workers removed because of it, serving continues.
 */
export async function controllerStopScenario(
  ctx: ChaosContext,
  options: { stopMs: number },
): Promise<FaultResult> {
  const faultAt = Date.now();
  let resumedAt = faultAt;
  await withStoppedController(async () => {
    ctx.log?.(`slurmctld stopped for ${options.stopMs} ms`);
    await sleep(options.stopMs);
    resumedAt = Date.now();
  });
  const during = (e: SchedulerEvent) => e.time >= faultAt && e.time <= resumedAt + 5_000;
  return finish(
    ctx,
    `slurmctld SIGSTOP ${Math.round(options.stopMs / 1000)} s`,
    faultAt,
    () => false,
    (requests, events) => ({
      'jobs cancelled': events.filter((e) => during(e) && e.event === 'cancelled').length,
      'workers removed': events.filter((e) => during(e) && e.event === 'gone').length,
      'no request served while stopped':
        requests.filter((r) => r.outcome === 'ok' && r.end < resumedAt).length > 0 ? 0 : 1,
    }),
    [`controller frozen ${resumedAt - faultAt} ms`],
    () => false,
    false,
  );
}

/**
 * Makes sbatch fail (`mode`) for `failMs` while a node must be replaced (its worker is
 * SIGKILLed), then lets calls through. Promises: calls stay within the backoff's bound (no
 * hot loop); submissions resume within one backoff step of recovery (policy: as soon as one
 * of our jobs leaves, which a second worker kill provokes).
 */
export async function sbatchFailureScenario(
  ctx: ChaosContext,
  shim: SbatchShim,
  options: {
    mode: Exclude<SbatchMode, 'pass' | 'double'>;
    failMs: number;
    /** The mode to go back to afterwards (default `pass`; `double` when that fault is planted). */
    passMode?: 'pass' | 'double';
  },
): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers);
  shim.setMode(options.mode);
  const faultAt = Date.now();
  killWorkerOfJob(victim.jobId);
  ctx.log?.(
    `sbatch ${options.mode} for ${options.failMs} ms; killed the worker of job ${victim.jobId}`,
  );
  await sleep(options.failMs);
  const recoverAt = Date.now();
  shim.setMode(options.passMode ?? 'pass');
  shim.releaseHung();
  const failing = shim.calls().filter((t) => t >= faultAt && t < recoverAt);
  const bound = options.mode === 'policy' ? 2 : maxCallsUnderBackoff(recoverAt - faultAt);
  if (options.mode === 'policy') {
    // A policy backoff ends when one of our jobs leaves: make one leave.
    const other = (await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey())).find(
      (w) => w.status === 'READY' && w.jobId !== victim.jobId,
    );
    if (other !== undefined) killWorkerOfJob(other.jobId);
  }
  const notes: string[] = [];
  const gaps = failing.slice(1).map((t, i) => t - (failing[i] ?? t));
  const lastGap = gaps.at(-1) ?? 2_000;
  const result = await finish(
    ctx,
    `sbatch ${options.mode} error ${Math.round(options.failMs / 1000)} s`,
    faultAt,
    (e) => e.jobId === victim.jobId && e.event !== 'running',
    (_requests, events) => {
      const resumed = events.find((e) => e.time >= recoverAt && e.event === 'submitted');
      const resumeMs = resumed === undefined ? undefined : resumed.time - recoverAt;
      // One backoff step: the next gap is at most twice the last (transient), or the tick
      // after a job leaves (policy); plus one reconcile tick and a squeue.
      const step = options.mode === 'policy' ? 15_000 : Math.min(60_000, 2 * lastGap) + 3_000;
      notes.push(
        `${failing.length} sbatch calls in ${recoverAt - faultAt} ms of failure (bound ${bound}); gaps ${gaps.map((g) => `${(g / 1000).toFixed(1)} s`).join(', ') || '—'}; first submission ${resumeMs ?? '—'} ms after recovery (bound ${step} ms)`,
      );
      return {
        'sbatch calls beyond the backoff bound': Math.max(0, failing.length - bound),
        'no sbatch retry during the failure': failing.length > 0 ? 0 : 1,
        'late resumption': resumeMs === undefined || resumeMs > step ? 1 : 0,
      };
    },
    notes,
  );
  return result;
}
