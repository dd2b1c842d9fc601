/**
 * Faults that run their own one-node scheduler: engines that misbehave by flag, and jobs that
 * never serve (failing at launch, or never registering).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cancelByNamePrefix } from '@es/testkit';
import { maxLiveJobs, summarize } from './checker.js';
import { continuations } from './engine-log.js';
import { judge } from './judge.js';
import { startLoad, type Load } from './load.js';
import { maxCallsUnderBackoff } from './sbatch-shim.js';
import type { FaultResult } from './report.js';
import { sampleQueue, startSchedulerProcess } from './scheduler-process.js';
import { continuityChecks, countBy, waitForCapacity, waitForIdleNodes } from './scenario-kit.js';

/**
 * A separate one-node scheduler whose mock engines misbehave by flag (`--die-mid-stream N`:
 * every stream's connection is destroyed after N chunks; `--crash-after N`: the engine exits
 * after N requests, cutting the others), under load for `durationMs`. Promises: non-streaming
 * requests are retried to success or fail with a status, nothing hangs, no generation is
 * restarted from scratch; with `continuable`, every stream an engine cut is continued on the
 * other engine (0 streams cut but refusals), else it ends with an error event.
 */
export async function engineMisbehaviourScenario(options: {
  logDir: string;
  schedulerId: string;
  label: string;
  engineFlags: string;
  durationMs: number;
  concurrency?: number;
  /** Judge the continuation promise: 0 streams cut (refusals listed by reason). */
  continuable?: boolean;
  /** Environment of the scheduler (e.g. `ES_PLANT_FAULTS`). */
  env?: Record<string, string>;
  log?: (message: string) => void;
}): Promise<FaultResult> {
  await waitForIdleNodes(1, 5 * 60_000);
  const scheduler = await startSchedulerProcess({
    backend: 'slurm',
    logDir: options.logDir,
    schedulerId: options.schedulerId,
    maxNodes: 1,
    engineExtraArgs: `--tokens-per-second 50 --ttft 50 ${options.engineFlags}`,
    ...(options.env === undefined ? {} : { env: options.env }),
  });
  let load: Load | undefined;
  const queue = sampleQueue(scheduler.jobName);
  try {
    await waitForCapacity(() => scheduler.url, 1, 120_000);
    const faultAt = Date.now();
    load = startLoad({
      baseUrl: scheduler.url,
      model: 'mock-model',
      concurrency: options.concurrency ?? 8,
      idPrefix: options.schedulerId,
    });
    await sleep(options.durationMs);
    const requests = await load.stop();
    load = undefined;
    const end = Date.now();
    const streamsCut = requests.filter((r) => r.stream && r.outcome === 'error-event').length;
    const cutAndContinued = new Set(
      continuations(scheduler.events())
        .filter((c) => c.outcome === 'continued' || c.outcome === 'inexact')
        .map((c) => c.requestId),
    ).size;
    const events = scheduler.events();
    const engine = scheduler.engineLog();
    const judged = judge({
      requests,
      journal: scheduler.journal(),
      events,
      queue: queue.samples,
      maxNodes: 1,
      engine,
    });
    const notes: string[] = [];
    const continuity = options.continuable ? continuityChecks(requests, events, notes) : {};
    const result: FaultResult = {
      fault: options.label,
      requests: summarize(requests),
      detectionMs: [],
      checks: {
        ...judged.checks,
        ...continuity,
        // The fault must really cut streams: ended with an error event, or continued.
        'fault never hit a stream':
          streamsCut + cutAndContinued > 0 || !options.engineFlags.includes('die-mid-stream')
            ? 0
            : 1,
      },
      notes: [
        `engine flags ${options.engineFlags}; ${streamsCut} streams ended with an error event; ${cutAndContinued} generations cut and continued; ${events.filter((e) => e.time >= faultAt && (e.event === 'gone' || e.event === 'failed')).length} worker gone/failed events`,
        ...notes,
        ...Object.entries(judged.offenders).map(([check, o]) => `${check}: ${o.join('; ')}`),
      ],
      window: { from: faultAt, to: end },
      history: {
        requests,
        events,
        queue: queue.samples,
        capacity: [],
        journal: scheduler.journal(),
        engine,
      },
    };
    options.log?.(`${options.label}: ${JSON.stringify({ ...result, history: undefined })}`);
    return result;
  } finally {
    await load?.stop();
    await queue.stop();
    await scheduler.stop();
    await cancelByNamePrefix(scheduler.jobName);
  }
}

/**
 * A one-node deployment whose jobs never serve: set-up lines (shell code of the batch
 * script, from a config file) that fail at launch (`exit 1`) or never let the worker start
 * (`sleep`). Runs `durationMs`. Promises: never-registering jobs are cancelled after the
 * start-up timeout (plus two ticks) and replaced; submissions stay within a backoff bound
 * (no hot loop of failing jobs); never more than `max_nodes` live jobs.
 */
export async function launchFailureScenario(options: {
  logDir: string;
  schedulerId: string;
  label: string;
  setup: string[];
  startupTimeoutS: number;
  durationMs: number;
  log?: (message: string) => void;
}): Promise<FaultResult> {
  await waitForIdleNodes(1, 5 * 60_000);
  const config = join(options.logDir, 'config.json');
  mkdirSync(options.logDir, { recursive: true, mode: 0o700 });
  writeFileSync(config, JSON.stringify({ setup: options.setup }));
  const scheduler = await startSchedulerProcess({
    backend: 'slurm',
    logDir: options.logDir,
    schedulerId: options.schedulerId,
    maxNodes: 1,
    extraArgs: ['--config', config, '--startup-timeout', String(options.startupTimeoutS)],
  });
  const queue = sampleQueue(scheduler.jobName);
  const faultAt = Date.now();
  try {
    await sleep(options.durationMs);
  } finally {
    await queue.stop();
    await scheduler.stop();
    await cancelByNamePrefix(scheduler.jobName);
  }
  const events = scheduler.events().filter((e) => e.time >= faultAt);
  const submitted = events.filter((e) => e.event === 'submitted');
  const running = new Map<string, number>();
  const lateCancels: string[] = [];
  for (const e of events) {
    if (e.event === 'running' && e.jobId !== undefined) running.set(e.jobId, e.time);
    if (e.event === 'cancelled' && e.jobId !== undefined && running.has(e.jobId)) {
      const ranMs = e.time - (running.get(e.jobId) ?? e.time);
      if (ranMs > options.startupTimeoutS * 1000 + 5_000) lateCancels.push(e.jobId);
    }
  }
  const neverRegisters = options.setup.some((line) => line.startsWith('sleep'));
  // A job that never registers is replaced once per start-up timeout; a job that fails at
  // launch must be retried with a backoff, not once per reconcile tick.
  const bound = neverRegisters
    ? Math.ceil(options.durationMs / (options.startupTimeoutS * 1000)) + 1
    : maxCallsUnderBackoff(options.durationMs);
  const { max } = maxLiveJobs(queue.samples);
  const result: FaultResult = {
    fault: options.label,
    requests: { sent: 0, succeeded: 0, retried: 0, erroredCleanly: 0, lost: 0 },
    detectionMs: [],
    checks: {
      'submissions beyond the bound': Math.max(0, submitted.length - bound),
      'jobs cancelled later than start-up timeout + 5 s': lateCancels.length,
      'over-acquisition': Math.max(0, max - 1),
      ...(neverRegisters
        ? {
            'no job cancelled for not registering': events.some((e) => e.event === 'cancelled')
              ? 0
              : 1,
          }
        : {}),
    },
    notes: [
      `set-up ${JSON.stringify(options.setup)}, --startup-timeout ${options.startupTimeoutS}: ${submitted.length} submissions in ${Math.round(options.durationMs / 1000)} s (bound ${bound}); events ${JSON.stringify(countBy(events.map((e) => e.event)))}`,
    ],
  };
  options.log?.(`${options.label}: ${JSON.stringify(result)}`);
  return result;
}
