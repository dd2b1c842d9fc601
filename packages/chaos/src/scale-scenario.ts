/**
 * 1,024 simulated workers heartbeating into the shared scheduler while the load runs.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { SimulationRequest, SimulationResult } from './simulated-workers.js';
import { deriveKeys } from '@es/protocol';
import { inWindow, summarize } from './checker.js';
import { ChaosError } from './errors.js';
import type { FaultResult } from './report.js';
import { type ChaosContext, judgeWindow } from './scenario-kit.js';

/**
 * The simulated workers' script: next to this module in `dist`, or the built one when this
 * module runs from its TypeScript source (tests resolve workspace packages to `src`).
 */
function simulatedWorkersScript(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const candidate of [
    join(here, 'simulated-workers.mjs'),
    join(here, '../dist/simulated-workers.mjs'),
  ]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new ChaosError(
    'not_found',
    `simulated-workers.mjs is not built next to ${here}: run pnpm build`,
  );
}

function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * 1,024 simulated workers (real HTTP registrations, then a heartbeat every second each, from
 * this process) for `durationMs` while the load runs. Promises: every heartbeat answered 200,
 * no simulated worker timed out, and the time to first byte of the real load grows by at most
 * `maxAddedP50Ms` at the median. Simulated workers report `loading`, so none is routed to.
 */
export async function scaleScenario(
  ctx: ChaosContext,
  options: {
    logDir: string;
    model: string;
    workers?: number;
    durationMs: number;
    maxAddedP50Ms?: number;
  },
): Promise<FaultResult> {
  const count = options.workers ?? 1_024;
  const workerKey = deriveKeys(readFileSync(join(options.logDir, 'secret'), 'utf8')).workerKey;
  const baselineFrom = Date.now() - 20_000;
  const ttfb = (from: number, to: number) =>
    ctx.load.records
      .filter(
        // Streams: their first byte is the first token, the proxy's share of which matters.
        (r) =>
          r.stream &&
          r.start >= from &&
          r.start < to &&
          r.outcome === 'ok' &&
          r.firstByte !== undefined,
      )
      .map((r) => (r.firstByte ?? r.start) - r.start);
  // The simulated workers run in their own process, as independent nodes do: heartbeats sent
  // from this one would share its event loop with the load and measure each other's delays.
  const child = fork(simulatedWorkersScript(), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const messages: unknown[] = [];
  let wake: (() => void) | undefined;
  child.on('message', (message) => {
    messages.push(message);
    wake?.();
  });
  const next = async <T extends { type: string }>(type: T['type']): Promise<T> => {
    for (;;) {
      const index = messages.findIndex((m) => (m as { type?: string }).type === type);
      if (index >= 0) return messages.splice(index, 1)[0] as T;
      if (child.exitCode !== null)
        throw new ChaosError(
          'start_failed',
          `simulated workers exited (${child.exitCode}) before '${type}'`,
        );
      await Promise.race([new Promise<void>((resolve) => (wake = resolve)), exited]);
    }
  };
  const request: SimulationRequest = {
    // The worker listener (its own thread), where real workers report.
    base: `${ctx.scheduler.workerUrl}/api/v1/workers`,
    workerKey,
    deployment: options.model,
    model: options.model,
    count,
    durationMs: options.durationMs,
  };
  child.send(request);
  let started: { ids: string[]; refused: number };
  let simulated: SimulationResult;
  let faultAt: number;
  try {
    started = await next<{ type: 'heartbeating'; ids: string[]; refused: number }>('heartbeating');
    faultAt = Date.now();
    ctx.log?.(
      `${started.ids.length} simulated workers registered (${started.refused} refused); heartbeating`,
    );
    simulated = await next<SimulationResult>('done');
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const end = Date.now();
  const ids = started.ids;
  const refused = started.refused;
  child.send({ type: 'deregister' });
  await exited;
  await ctx.load.settled(end);
  const events = ctx.scheduler.events();
  const simulatedIds = new Set(ids);
  const timedOut = events.filter(
    (e) =>
      e.time >= faultAt &&
      // Their deregistration at the end is not a timeout.
      e.time <= end &&
      e.event === 'gone' &&
      e.workerId !== undefined &&
      simulatedIds.has(e.workerId),
  ).length;
  const before = percentile(ttfb(baselineFrom, faultAt), 50);
  const during = percentile(ttfb(faultAt, end), 50);
  const added = before === undefined || during === undefined ? undefined : during - before;
  const requests = inWindow(ctx.load.records, faultAt, end);
  const judged = judgeWindow(ctx, requests, events, faultAt, end);
  const result: FaultResult = {
    fault: `${count} simulated workers heartbeating every second`,
    requests: summarize(requests),
    detectionMs: [],
    window: { from: faultAt, to: end },
    run: 'main',
    checks: {
      ...judged.checks,
      'registrations refused': refused,
      'heartbeats not answered 200': simulated.sent - simulated.answered,
      'simulated workers timed out': timedOut,
      [`time to first byte p50 grown by more than ${options.maxAddedP50Ms ?? 5} ms`]:
        added === undefined || added > (options.maxAddedP50Ms ?? 5) ? 1 : 0,
    },
    notes: [
      `${simulated.sent} heartbeats in ${Math.round((end - faultAt) / 1000)} s (${Math.round(simulated.sent / ((end - faultAt) / 1000))}/s), from a process of their own; latency p50 ${simulated.latencyP50?.toFixed(1)} ms, p99 ${simulated.latencyP99?.toFixed(1)} ms (that process's own event-loop delay p99 ${simulated.loopDelayP99.toFixed(1)} ms); failures by status ${JSON.stringify(simulated.failures)}`,
      `client time to the first stream chunk (the role chunk, sent before the engine's TTFT, so mostly proxy and network) p50 ${before?.toFixed(1)} ms before, ${during?.toFixed(1)} ms during (proxy issue target: added p50 <= 0.3 ms at c=1, measured in bench/proxy; this end-to-end figure includes the engine's 50 ms TTFT)`,
    ],
  };
  ctx.log?.(`scale: ${JSON.stringify(result)}`);
  return result;
}
