/**
 * Faults of the control plane and of the data plane (issue 17): the scheduler killed and
 * restarted, the scheduler kept down while a worker dies, one `es-proxy` process killed.
 * Serving must not notice the scheduler, and a data-plane process that dies takes only its
 * own in-flight requests with it.
 */
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { duplicateSubmissions, inWindow } from './checker.js';
import { longestGap, splitByKilledProcess, successGaps } from './data-plane-checks.js';
import { ChaosError } from './errors.js';
import { isAlive, killPids, killWorkerOfJob, pidsOfJob } from './faults.js';
import type { RequestRecord } from './history.js';
import type { FaultResult } from './report.js';
import {
  type ChaosContext,
  continuityChecks,
  finish,
  liveWorkers,
  pickVictim,
  waitForCapacity,
} from './scenario-kit.js';

/** The longest stretch without a successful response the data plane may show (ms). */
export const MAX_GAP_MS = 1_000;
/** The check of {@link MAX_GAP_MS}. */
export const GAP_CHECK = 'gaps over 1 s in successful responses';

/** The gap check over `[from, to]`, with the longest gap in the notes. */
function gapCheck(
  requests: readonly RequestRecord[],
  from: number,
  to: number,
  notes: string[],
): Record<string, number> {
  const gaps = successGaps(requests, from, to, MAX_GAP_MS);
  notes.push(
    `longest stretch without a successful response ${longestGap(requests, from, to)} ms (${Math.round((to - from) / 1000)} s from the fault)${gaps.length === 0 ? '' : `; over 1 s: ${gaps.map((g) => `${g.ms} ms from ${new Date(g.from).toISOString()}`).join(', ')}`}`,
  );
  return { [GAP_CHECK]: gaps.length };
}

/**
 * SIGKILLs the scheduler under load and starts it again on the same port, `clientRetries` the
 * load's retries for the fault (0: the data plane alone must hide the restart). Promises: 0
 * requests lost, 0 streams cut, no gap over 1 s in successful responses (the data plane keeps
 * serving from its table), the restarted scheduler adopts every job (0 duplicate submissions)
 * and has every worker ready again within two heartbeat intervals (1 s each here).
 */
export async function schedulerRestartScenario(
  ctx: ChaosContext,
  options: { downMs: number; clientRetries: number },
): Promise<FaultResult> {
  ctx.load.setMaxRetries(options.clientRetries);
  // Wait until every request in flight uses the new setting.
  await sleep(3_000);
  const faultAt = Date.now();
  await ctx.scheduler.kill('SIGKILL');
  ctx.log?.('SIGKILLed the scheduler');
  await sleep(options.downMs);
  const restartAt = Date.now();
  await ctx.scheduler.restart();
  const servingAt = Date.now();
  let readyAt: number | undefined;
  try {
    // The control plane's own count: each data-plane process answers /health from its table.
    readyAt = await waitForCapacity(() => ctx.scheduler.controlUrl, ctx.target, 30_000);
  } catch {
    readyAt = undefined;
  }
  const readyMs = readyAt === undefined ? undefined : Math.max(0, readyAt - servingAt);
  const plane = ctx.scheduler.dataPlane();
  const notes = [
    `down ${restartAt - faultAt} ms; serving again after ${servingAt - restartAt} ms; all workers ready ${readyMs ?? '—'} ms after that; client maxRetries ${options.clientRetries}; data plane ${plane === undefined ? 'in the scheduler process (--proxy-processes 0)' : `es-proxy pid ${plane.pid}, ${plane.processes} processes`}`,
  ];
  return finish(
    ctx,
    'scheduler SIGKILL + restart',
    faultAt,
    (e) => e.time >= restartAt && (e.event === 'adopted' || e.event === 'registered'),
    (requests, events) => ({
      ...continuityChecks(requests, events, notes),
      ...gapCheck(requests, faultAt, (readyAt ?? servingAt) + 2_000, notes),
      'duplicate submissions': duplicateSubmissions(ctx.scheduler.events(), restartAt, ctx.maxNodes)
        .duplicates,
      'workers not ready within 2 heartbeats': readyMs === undefined || readyMs > 2_000 ? 1 : 0,
    }),
    notes,
  ).finally(() => ctx.load.setMaxRetries(2));
}

/** The check that the node of a worker that died during the outage was replaced. */
export const REPLACED_CHECK = "dead worker's node not replaced after the restart";

/**
 * SIGKILLs the scheduler and keeps it down `downMs`; a quarter of the way in, SIGKILLs one
 * worker daemon (its job ends, its engines with it), then restarts the scheduler. Promises:
 * 0 lost, 0 streams cut (the dead worker's streams are continued elsewhere by the data plane on
 * its own), no gap over 1 s in successful responses, and once the scheduler is back, the dead
 * worker's node replaced (a worker of a new job ready) within the capacity bound.
 * `stayDown` (a planted fault) waits 15 s for the replacement before restarting the scheduler.
 */
export async function schedulerDownScenario(
  ctx: ChaosContext,
  options: { downMs: number; stayDown?: boolean },
): Promise<FaultResult> {
  const workers = await liveWorkers(ctx.scheduler.url, ctx.scheduler.adminKey());
  const victim = pickVictim(workers);
  const jobsBefore = new Set(workers.map((w) => w.jobId));
  const faultAt = Date.now();
  await ctx.scheduler.kill('SIGKILL');
  ctx.log?.(`SIGKILLed the scheduler; keeping it down ${options.downMs} ms`);
  const killAfterMs = Math.round(options.downMs / 4);
  await sleep(killAfterMs);
  const pids = killWorkerOfJob(victim.jobId);
  ctx.log?.(`SIGKILLed worker of job ${victim.jobId} (pids ${pids.join(',')}) during the outage`);
  await sleep(options.downMs - killAfterMs);
  const notes = [
    `scheduler down ${options.downMs} ms; worker of job ${victim.jobId} on ${victim.node} SIGKILLed ${killAfterMs} ms into the outage`,
  ];
  let restartAt = Date.now();
  let replacedAt: number | undefined;
  if (options.stayDown === true) {
    // Planted: the replacement is waited for while the scheduler is still down.
    notes.push('PLANTED: the scheduler is restarted only after 15 s of waiting for the new node');
    replacedAt = await waitForReplacement(ctx, jobsBefore, restartAt, 15_000);
    restartAt = Date.now();
  }
  await ctx.scheduler.restart();
  const servingAt = Date.now();
  if (options.stayDown !== true) {
    replacedAt = await waitForReplacement(ctx, jobsBefore, restartAt, ctx.capacityTimeoutMs);
  }
  notes.push(
    `serving again ${servingAt - restartAt} ms after the restart; node replaced ${replacedAt === undefined ? 'never' : `${replacedAt - restartAt} ms`} after the restart`,
  );
  return finish(
    ctx,
    `scheduler down ${Math.round(options.downMs / 1000)} s, a worker SIGKILLed meanwhile`,
    faultAt,
    (e) => e.time >= restartAt && e.jobId !== undefined && !jobsBefore.has(e.jobId),
    (requests, events) => {
      const orphans = pidsOfJob(victim.jobId, 'mock-engine');
      killPids(orphans, 'SIGKILL');
      return {
        ...continuityChecks(requests, events, notes),
        ...gapCheck(requests, faultAt, restartAt + 5_000, notes),
        [REPLACED_CHECK]: replacedAt === undefined ? 1 : 0,
        'engine processes outliving the job': orphans.length,
      };
    },
    notes,
    () => false,
    false,
  );
}

/** When a worker of a job not in `jobsBefore` was first ready after `since` (the scheduler's log). */
async function waitForReplacement(
  ctx: ChaosContext,
  jobsBefore: ReadonlySet<string>,
  since: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ready = ctx.scheduler
      .events()
      .find(
        (e) =>
          e.time >= since &&
          e.event === 'ready' &&
          e.jobId !== undefined &&
          !jobsBefore.has(e.jobId),
      );
    if (ready !== undefined) return ready.time;
    if (Date.now() > deadline) return undefined;
    await sleep(500);
  }
}

/** One `GET /health` on a connection of its own; true when answered within `timeoutMs`. */
function probe(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/health', agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode !== undefined && res.statusCode < 500));
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

/**
 * The data-plane process with the most requests in flight by its last report to the scheduler
 * (`GET /api/v1/admin/data-plane`; the kernel may hand one process most connections), so the
 * kill hits requests; the first one when none reports any within 5 s.
 */
async function busiestProcess(
  ctx: ChaosContext,
  pids: readonly number[],
): Promise<{ pid: number; inFlight: Record<number, number> }> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${ctx.scheduler.controlUrl}/api/v1/admin/data-plane`, {
        headers: { authorization: `Bearer ${ctx.scheduler.adminKey()}` },
        signal: AbortSignal.timeout(2_000),
      });
      // The admin's view: each process's requests in flight, summed over its workers.
      const body = (await response.json()) as {
        processes?: { pid: number; inFlight: number }[];
      };
      const counts = (body.processes ?? [])
        .filter((p) => pids.includes(p.pid))
        .map((p) => ({ pid: p.pid, n: p.inFlight }))
        .sort((a, b) => b.n - a.n);
      const busy = counts[0];
      if (busy !== undefined && busy.n > 0) {
        return { pid: busy.pid, inFlight: Object.fromEntries(counts.map((c) => [c.pid, c.n])) };
      }
    } catch {
      // Not answered yet: ask again.
    }
    await sleep(200);
  }
  return { pid: pids[0]!, inFlight: {} };
}

/** Faults planted in `es-proxy-kill` to break its promises. */
export interface ProxyKillPlants {
  /** Kill every data-plane process, not one. */
  killEveryProcess?: boolean;
  /** Stop the supervisor (SIGSTOP) until the respawn bound has passed. */
  noRespawn?: boolean;
}

/** The check that the port kept answering. */
export const PROBE_CHECK = 'health probes unanswered after the kill';
/** The check that the killed process was respawned. */
export const RESPAWN_CHECK = 'killed process not respawned within 10 s';
/** The check that only the killed process's requests failed. */
export const OTHERS_CHECK = 'failed requests the killed process did not carry';

/**
 * With the data plane in two or more processes, SIGKILLs one of them (a pid of
 * `<logDir>/data-plane.json`, the one with the most requests in flight). Promises: only the requests it had in flight fail (they are
 * counted in the notes and excused, the client sees them as errors), the port keeps answering
 * (a `/health` probe every 100 ms on a new connection, for 5 s: none unanswered; no gap over
 * 1 s in successful responses), the supervisor respawns it within 10 s, and nothing else is
 * lost. Planted ({@link ProxyKillPlants}): every process killed; the supervisor stopped.
 */
export async function esProxyKillScenario(
  ctx: ChaosContext,
  plants: ProxyKillPlants = {},
): Promise<FaultResult> {
  const plane = ctx.scheduler.dataPlane();
  if (plane === undefined || plane.workers.length < 2) {
    throw new ChaosError(
      'not_found',
      `es-proxy-kill needs a data plane of 2 or more processes (--proxy-processes 2); ${plane === undefined ? 'there is no data-plane.json' : `it runs ${plane.workers.length}`}`,
    );
  }
  const busiest = await busiestProcess(ctx, plane.workers);
  const victim = busiest.pid;
  const targets =
    plants.killEveryProcess === true
      ? [victim, ...plane.workers.filter((p) => p !== victim)]
      : [victim];
  if (plants.noRespawn === true) killPids([plane.pid], 'SIGSTOP');
  const faultAt = Date.now();
  killPids(targets, 'SIGKILL');
  ctx.log?.(`SIGKILLed es-proxy process(es) ${targets.join(',')} (primary ${plane.pid})`);
  const probing = (async () => {
    let unanswered = 0;
    let sent = 0;
    const until = Date.now() + 5_000;
    while (Date.now() < until) {
      sent++;
      if (!(await probe(plane.port, 1_000))) unanswered++;
      await sleep(100);
    }
    return { sent, unanswered };
  })();
  let respawnedAt: number | undefined;
  const deadline = faultAt + 10_000;
  while (respawnedAt === undefined && Date.now() < deadline) {
    const now = ctx.scheduler.dataPlane();
    const fresh = now?.workers.filter((pid) => !plane.workers.includes(pid) && isAlive(pid));
    if (now !== undefined && !isAlive(victim) && (fresh?.length ?? 0) >= targets.length) {
      respawnedAt = Date.now();
    } else await sleep(100);
  }
  if (plants.noRespawn === true) killPids([plane.pid], 'SIGCONT');
  const probes = await probing;
  const notes = [
    `es-proxy primary ${plane.pid}, ${plane.processes} processes ${plane.workers.join(', ')} (in flight by their last reports: ${JSON.stringify(busiest.inFlight)}): SIGKILLed ${targets.join(', ')}; respawned ${respawnedAt === undefined ? 'not within 10 s' : `after ${respawnedAt - faultAt} ms (now ${ctx.scheduler.dataPlane()?.workers.join(', ') ?? '?'})`}; ${probes.sent} health probes, ${probes.unanswered} unanswered`,
    ...(plants.killEveryProcess === true ? ['PLANTED: every data-plane process killed'] : []),
    ...(plants.noRespawn === true ? ['PLANTED: the supervisor stopped, nothing respawned'] : []),
  ];
  // What the killed process carried, judged once the window's requests have ended.
  let split: ReturnType<typeof splitByKilledProcess> | undefined;
  const carried = () =>
    (split ??= splitByKilledProcess(
      inWindow(ctx.load.records, faultAt, Date.now()),
      ctx.scheduler.journal(),
      victim,
      faultAt,
    ));
  const excused = (r: RequestRecord) => carried().failedCarried.some((c) => c.id === r.id);
  return finish(
    ctx,
    `es-proxy SIGKILL (1 of ${plane.workers.length} processes)`,
    faultAt,
    () => false,
    (requests) => {
      const { carried: hit, failedCarried } = carried();
      const others = splitByKilledProcess(requests, ctx.scheduler.journal(), victim, faultAt);
      notes.push(
        `the killed process carried ${hit.length} requests in flight: ${failedCarried.filter((r) => r.stream).length} streams and ${failedCarried.filter((r) => !r.stream).length} non-streaming requests failed (client errors, excused), ${hit.length - failedCarried.length} completed`,
      );
      return {
        [OTHERS_CHECK]: others.failedOthers.length,
        [PROBE_CHECK]: probes.unanswered,
        [RESPAWN_CHECK]: respawnedAt === undefined ? 1 : 0,
        'the kill hit no request in flight': hit.length === 0 ? 1 : 0,
        ...gapCheck(requests, faultAt, faultAt + 10_000, notes),
      };
    },
    notes,
    excused,
    false,
  );
}
