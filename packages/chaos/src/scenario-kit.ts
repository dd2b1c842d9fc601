/**
 * What every chaos scenario works with: the shared scheduler's context, its live workers, waits
 * for capacity and idle nodes, and `finish`, which judges a fault's window into a `FaultResult`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { runSlurm } from '@es/testkit';
import { detectionTime, inWindow, summarize, timeToCapacity } from './checker.js';
import { continuations, streamCuts } from './engine-log.js';
import { judge } from './judge.js';
import { ChaosError } from './errors.js';
import type { RequestRecord, SchedulerEvent } from './history.js';
import { type Load } from './load.js';
import type { FaultResult } from './report.js';
import { type Sampler, type SchedulerProcess } from './scheduler-process.js';
import type { CapacitySample, QueueSample } from './history.js';

/** What every scenario works with. */
export interface ChaosContext {
  scheduler: SchedulerProcess;
  load: Load;
  capacity: Sampler<CapacitySample>;
  queue: Sampler<QueueSample>;
  maxNodes: number;
  /** Ready workers at full capacity (`maxNodes × gpusPerNode / TP`). */
  target: number;
  /** Longest wait for capacity to come back, ms; longer is a broken promise. */
  capacityTimeoutMs: number;
  /**
   * Requests a fault excused (by id), so the whole-run judgement excuses them too; filled
   * by the scenarios.
   */
  excused: Set<string>;
  /** Log progress. */
  log?: (message: string) => void;
}

/** A live worker as `GET /workers` shows it. */
export interface LiveWorker {
  id: string;
  jobId: string;
  restartCount: number;
  index: number;
  node: string;
  port: number;
  status: string;
}

/**
 * The scheduler's live workers. `adminKey` (`SchedulerProcess.adminKey()`): without it
 * `/workers` names no worker, node or address.
 */
export async function liveWorkers(url: string, adminKey: string): Promise<LiveWorker[]> {
  const response = await fetch(`${url}/workers`, {
    headers: { authorization: `Bearer ${adminKey}` },
    signal: AbortSignal.timeout(5_000),
  });
  if (!response.ok) {
    throw new ChaosError(
      'not_found',
      `GET ${url}/workers: ${response.status} ${await response.text()}`,
    );
  }
  const body = (await response.json()) as {
    workers: { worker_id: string; base_url: string; status: string; hostname: string }[];
  };
  return body.workers.map((w) => {
    const [jobId = '', restart = '0', index = '0'] = w.worker_id.split('.');
    return {
      id: w.worker_id,
      jobId,
      restartCount: Number(restart),
      index: Number(index),
      node: w.hostname,
      port: Number(new URL(w.base_url).port),
      status: w.status,
    };
  });
}

/**
 * A ready worker to hit, a first incarnation when there is one (a requeued job is kept alive
 * for the hostile corpus's stale-incarnation cases); throws when none is ready.
 */
export function pickVictim(
  workers: readonly LiveWorker[],
  missing = 'no ready worker',
): LiveWorker {
  const ready = workers.filter((w) => w.status === 'READY');
  const victim = ready.find((w) => w.restartCount === 0) ?? ready[0];
  if (victim === undefined) throw new ChaosError('not_found', missing);
  return victim;
}

/** The instance index of a worker id (`<job>.<restart count>.<index>`). */
export function instanceIndex(workerId: string): number {
  return Number(workerId.split('.').at(-1));
}

/**
 * Waits until `target` workers are ready and stay so for `stableMs` (nodes that share a
 * host on the dev cluster may churn at start-up); resolves to the time it was reached.
 */
export async function waitForCapacity(
  url: () => string,
  target: number,
  timeoutMs: number,
  stableMs = 0,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let since: number | undefined;
  for (;;) {
    let ready: number;
    try {
      const response = await fetch(`${url()}/health`, { signal: AbortSignal.timeout(2_000) });
      ready = ((await response.json()) as { ready_workers?: number }).ready_workers ?? 0;
    } catch {
      ready = 0;
    }
    if (ready >= target) {
      since ??= Date.now();
      if (Date.now() - since >= stableMs) return since;
    } else since = undefined;
    if (Date.now() > deadline) {
      throw new ChaosError('timeout', `${ready}/${target} workers ready after ${timeoutMs} ms`);
    }
    await sleep(200);
  }
}

/**
 * Waits until the shared dev cluster has `count` idle nodes in partition `low` (other test
 * runs may hold some); resolves to their names.
 */
export async function waitForIdleNodes(count: number, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Partition low (the default, where the chaos schedulers submit): the dev cluster's
    // 4-GPU node of partition small is no capacity of theirs.
    const result = await runSlurm('sinfo', ['-h', '-N', '-p', 'low', '-t', 'idle', '-o', '%N']);
    const idle = [
      ...new Set(
        result.stdout
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean),
      ),
    ];
    if (idle.length >= count) return idle;
    if (Date.now() > deadline) {
      throw new ChaosError(
        'timeout',
        `only ${idle.length} of the ${count} nodes needed are idle after ${timeoutMs} ms (other test runs hold the rest)`,
      );
    }
    await sleep(2_000);
  }
}

/** Every promise, judged over the requests and journal attempts of one fault's window. */
export function judgeWindow(
  ctx: ChaosContext,
  requests: readonly RequestRecord[],
  events: readonly SchedulerEvent[],
  from: number,
  to: number,
) {
  return judge({
    requests,
    journal: ctx.scheduler.journal(),
    events,
    queue: ctx.queue.samples.filter((q) => q.time >= from && q.time < to),
    maxNodes: ctx.maxNodes,
    window: { from, to },
    engine: ctx.scheduler.engineLog(),
  });
}

/**
 * The continuation promise for a fault that cuts generations (an engine or worker dies, a
 * stream stalls, a node is preempted without grace): 0 streams cut, except the ones the
 * proxy refused to continue, which the notes list by reason with every continuation decision.
 */
export function continuityChecks(
  requests: readonly RequestRecord[],
  events: readonly SchedulerEvent[],
  notes: string[],
): Record<string, number> {
  const { cut, refused } = streamCuts(requests, events);
  const ids = new Set(requests.map((r) => r.id));
  const decisions = continuations(events).filter((c) => ids.has(c.requestId));
  const byOutcome = countBy(decisions.map((c) => c.outcome));
  notes.push(
    `continuation decisions for these requests: ${
      decisions.length === 0
        ? 'none'
        : Object.entries(byOutcome)
            .map(([o, n]) => `${o} ${n}`)
            .join(', ')
    }; refusals (an error event by design, not counted as cut): ${
      Object.keys(refused).length === 0
        ? 'none'
        : Object.entries(refused)
            .map(([reason, r]) => `${reason} ${r.length} (${r.slice(0, 3).join(', ')})`)
            .join('; ')
    }`,
  );
  if (cut.length > 0) {
    notes.push(
      `streams cut: ${cut
        .slice(0, 5)
        .map(
          (r) =>
            `${r.id} (${r.outcome}${r.message === undefined ? '' : `: ${r.message.slice(0, 80)}`})`,
        )
        .join('; ')}`,
    );
  }
  return { 'streams cut': cut.length };
}

/** The name of the capacity check for a bound of `ms`. */
export function capacityCheck(ms: number): string {
  return `capacity not restored within ${Math.round(ms / 1000)} s`;
}

/**
 * Ends a fault on the shared scheduler: waits for the dip it caused and for capacity to come
 * back, lets the window's requests end, then judges them (every promise, plus `extraChecks`)
 * into the fault's `FaultResult`; `excused` requests are left out of it and of the whole run.
 */
export async function finish(
  ctx: ChaosContext,
  fault: string,
  faultAt: number,
  matches: (e: SchedulerEvent) => boolean,
  extraChecks: (requests: RequestRecord[], events: SchedulerEvent[]) => Record<string, number>,
  notes: string[] = [],
  excused: (r: RequestRecord) => boolean = () => false,
  expectDip = true,
): Promise<FaultResult> {
  // Capacity is judged after the fault has shown: a killed worker keeps looking ready
  // until its job ends or its heartbeat times out.
  const dipDeadline = Date.now() + 15_000;
  while (
    expectDip &&
    Date.now() < dipDeadline &&
    !ctx.capacity.samples.some((c) => c.time >= faultAt && c.ready < ctx.target)
  ) {
    await sleep(100);
  }
  try {
    // The control plane's count (each data-plane process answers /health from its own table).
    await waitForCapacity(() => ctx.scheduler.controlUrl, ctx.target, ctx.capacityTimeoutMs, 1_000);
  } catch (error) {
    notes.push(String((error as Error).message));
  }
  // Requests started in the window still run: let them end before judging.
  await sleep(3_000);
  const end = Date.now();
  await ctx.load.settled(end);
  const events = ctx.scheduler.events();
  const capacityMs = timeToCapacity(ctx.capacity.samples, faultAt, ctx.target);
  const all = inWindow(ctx.load.records, faultAt, end);
  const excusedIds = new Set(all.filter(excused).map((r) => r.id));
  for (const id of excusedIds) ctx.excused.add(id);
  const requests = all.filter((r) => !excusedIds.has(r.id));
  if (excusedIds.size > 0) notes.push(`${excusedIds.size} requests excused (not counted above)`);
  // Without a scheduler event about it, the first dip of ready capacity is the detection.
  const dip = ctx.capacity.samples.find((c) => c.time >= faultAt && c.ready < ctx.target);
  const detection =
    detectionTime(events, faultAt, matches) ?? (dip === undefined ? undefined : dip.time - faultAt);
  const judged = judgeWindow(ctx, requests, events, faultAt, end);
  for (const [check, offenders] of Object.entries(judged.offenders)) {
    notes.push(`${check}: ${offenders.join('; ')}`);
  }
  const result: FaultResult = {
    fault,
    requests: summarize(requests),
    detectionMs: detection === undefined ? [] : [detection],
    checks: {
      ...judged.checks,
      ...extraChecks(requests, events),
      [capacityCheck(ctx.capacityTimeoutMs)]: capacityMs === undefined ? 1 : 0,
    },
    notes,
    window: { from: faultAt, to: end },
    excused: [...excusedIds],
    run: 'main',
  };
  if (capacityMs !== undefined) result.capacityMs = capacityMs;
  ctx.log?.(`${fault}: ${JSON.stringify(result)}`);
  return result;
}

/** How many times each value occurs. */
export function countBy(values: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
