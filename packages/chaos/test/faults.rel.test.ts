import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cancelByNamePrefix, uniqueJobPrefix } from '@es/testkit';
import {
  judge,
  runningAsRoot,
  sampleCapacity,
  sampleQueue,
  scenariosOf,
  startLoad,
  startSchedulerProcess,
  waitForCapacity,
  waitForIdleNodes,
  type ChaosContext,
  type FaultResult,
  type ScenarioRun,
  type SchedulerProcess,
} from '../src/index.js';

// CI short profile: 3 nodes × 2 mock engines (TP 4 of 8 GPUs) at 50 tokens/s, 8 clients
// (half streaming), the data plane in 2 es-proxy processes, one fault after another: the
// registry's short-profile scenarios, in order.
const MAX_NODES = 3;
const TARGET = MAX_NODES * 2;
const logDir = mkdtempSync(join(tmpdir(), 'es-chaos-'));
const schedulerId = uniqueJobPrefix('rel').slice(3, -1);
let ctx: ChaosContext | undefined;
let scheduler: SchedulerProcess | undefined;
const log = (m: string) => process.stdout.write(`[chaos] ${m}\n`);
const SHARED = scenariosOf('short').filter((s) => s.scheduler === 'shared');
const OWN = scenariosOf('short').filter((s) => s.scheduler === 'own');
/** The short profile's settings; `ctx` is the shared scheduler once it runs. */
const run = (ctx?: ChaosContext): ScenarioRun => ({
  profile: 'short',
  ...(ctx === undefined ? {} : { ctx }),
  logDir,
  schedulerId,
  plants: new Set(),
  env: {},
  concurrency: 8,
  stopMs: 0,
  schedulerDownMs: 10_000,
  sbatchFailMs: 0,
  misbehaviourMs: 0,
  log,
});

function context(): ChaosContext {
  if (ctx === undefined) throw new Error('the scheduler under test did not start');
  return ctx;
}

function expectKept(result: FaultResult): void {
  for (const [check, violations] of Object.entries(result.checks)) {
    expect
      .soft(violations, `${result.fault}: ${check} (${result.notes?.join('; ') ?? ''})`)
      .toBe(0);
  }
  expect.soft(result.requests.lost, `${result.fault}: lost requests`).toBe(0);
  expect.soft(result.requests.sent, `${result.fault}: load ran`).toBeGreaterThan(10);
  expect.soft(result.capacityMs, `${result.fault}: capacity restored`).toBeDefined();
}

describe('reliability under load (short profile)', () => {
  beforeAll(async () => {
    // The dev cluster is shared with other test runs: start once 3 nodes are free.
    await waitForIdleNodes(MAX_NODES, 240_000);
    const started = await startSchedulerProcess({
      backend: 'slurm',
      logDir,
      schedulerId,
      maxNodes: MAX_NODES,
      engineExtraArgs: '--tokens-per-second 50 --ttft 50',
      // The data plane in 2 processes of its own: es-proxy-kill kills one of them.
      proxyProcesses: 2,
    });
    scheduler = started;
    // Nodes share one host on the dev cluster: let start-up port churn settle first.
    await waitForCapacity(() => started.controlUrl, TARGET, 90_000, 3_000);
    ctx = {
      scheduler: started,
      load: startLoad({ baseUrl: started.url, model: 'mock-model', concurrency: 8 }),
      capacity: sampleCapacity(() => started.controlUrl),
      queue: sampleQueue(started.jobName),
      maxNodes: MAX_NODES,
      target: TARGET,
      capacityTimeoutMs: 90_000,
      excused: new Set(),
      log,
    };
    await new Promise((r) => setTimeout(r, 2_000));
  });

  afterAll(async () => {
    await ctx?.load.stop();
    await ctx?.capacity.stop();
    await ctx?.queue.stop();
    await scheduler?.stop();
    await cancelByNamePrefix(`es-${schedulerId}`);
  });

  for (const scenario of SHARED) {
    // Root only: it creates the unprivileged user (CI runs as root).
    it.skipIf(scenario.rootOnly === true && !runningAsRoot())(scenario.description, async () => {
      const result = await scenario.run(run(context()));
      expectKept(result);
      if (scenario.name === 'engine-hang') {
        // Liveness: the first probe within 1 s of the freeze, then 3 failures of 2 s back to back.
        expect(result.detectionMs[0]).toBeLessThan(10_000);
      }
    });
  }

  it('the whole run: every request, in and between the faults, kept every promise', () => {
    const c = context();
    const { checks, offenders } = judge({
      requests: c.load.records,
      journal: c.scheduler.journal(),
      events: c.scheduler.events(),
      queue: c.queue.samples,
      maxNodes: MAX_NODES,
      excused: c.excused,
      engine: c.scheduler.engineLog(),
    });
    // The engines logged every request: the restart check is over real logs.
    expect(c.scheduler.engineLog().firstTokens.length).toBeGreaterThan(100);
    // The recorder and the journal were really filled: a check over nothing cannot pass.
    expect(
      c.load.records.filter((r) => r.outcome === 'ok' && r.content !== '').length,
    ).toBeGreaterThan(100);
    expect(
      c.scheduler.journal().filter((e) => e.type === 'route' && !e.routable).length,
    ).toBeGreaterThan(0);
    for (const [check, violations] of Object.entries(checks)) {
      expect.soft(violations, `whole run: ${check} ${offenders[check]?.join('; ') ?? ''}`).toBe(0);
    }
  });
});

describe('scenarios with a scheduler of their own (short profile)', () => {
  for (const scenario of OWN) {
    it(scenario.description, async () => {
      const result = await scenario.run(run());
      for (const [check, violations] of Object.entries(result.checks)) {
        expect
          .soft(violations, `${result.fault}: ${check} (${result.notes?.join('; ') ?? ''})`)
          .toBe(0);
      }
      expect(result.requests.lost).toBe(0);
    });
  }
});
