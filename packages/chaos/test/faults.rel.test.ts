import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cancelByNamePrefix, uniqueJobPrefix } from '@es/testkit';
import {
  controllerRestartScenario,
  engineHangScenario,
  engineKillScenario,
  engineMisbehaviourScenario,
  hostileScenario,
  judge,
  otherUserScenario,
  preemptionScenario,
  runningAsRoot,
  sampleCapacity,
  sampleQueue,
  schedulerRestartScenario,
  startLoad,
  startSchedulerProcess,
  waitForCapacity,
  workerKillScenario,
  waitForIdleNodes,
  type ChaosContext,
  type FaultResult,
  type SchedulerProcess,
} from '../src/index.js';

// CI short profile: 3 nodes × 2 mock engines (TP 4 of 8 GPUs) at 50 tokens/s, 8 clients
// (half streaming), one fault after another.
const MAX_NODES = 3;
const TARGET = MAX_NODES * 2;
const logDir = mkdtempSync(join(tmpdir(), 'es-chaos-'));
const schedulerId = uniqueJobPrefix('rel').slice(3, -1);
let ctx: ChaosContext | undefined;
let scheduler: SchedulerProcess | undefined;

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
    });
    scheduler = started;
    // Nodes share one host on the dev cluster: let start-up port churn settle first.
    await waitForCapacity(() => started.url, TARGET, 90_000, 3_000);
    ctx = {
      scheduler: started,
      load: startLoad({ baseUrl: started.url, model: 'mock-model', concurrency: 8 }),
      capacity: sampleCapacity(() => started.url),
      queue: sampleQueue(started.jobName),
      maxNodes: MAX_NODES,
      target: TARGET,
      capacityTimeoutMs: 90_000,
      excused: new Set(),
      log: (m) => process.stdout.write(`[chaos] ${m}\n`),
    };
    await new Promise((r) => setTimeout(r, 2_000));
  });

  afterAll(async () => {
    await ctx?.load.stop();
    await ctx?.capacity.stop();
    await ctx?.queue.stop();
    await scheduler?.kill('SIGTERM');
    await cancelByNamePrefix(`es-${schedulerId}`);
  });

  it('preemption: no request to the draining worker, nothing lost, 0 streams cut, no over-acquisition', async () => {
    expectKept(await preemptionScenario(context(), { highJobSeconds: 20 }));
  });

  it('preemption with GraceTime 15: the drain lets in-flight streams finish', async () => {
    expectKept(await preemptionScenario(context(), { highJobSeconds: 20, graceTime: 15 }));
  });

  it('SIGKILL of an engine instance: non-streaming requests retried, streams continued elsewhere (0 cut, none restarted)', async () => {
    expectKept(await engineKillScenario(context()));
  });

  it('a hung engine (SIGSTOP 15 s): out of routing within seconds, waiting requests moved, its streams continued after the 3 s stall timeout, nothing hangs', async () => {
    const result = await engineHangScenario(context(), { frozenMs: 15_000 });
    expectKept(result);
    // Liveness: the first probe within 1 s of the freeze, then 3 failures of 2 s back to back.
    expect(result.detectionMs[0]).toBeLessThan(10_000);
  });

  it('SIGKILL of a worker daemon: its node is replaced, nothing lost, 0 streams cut', async () => {
    expectKept(await workerKillScenario(context()));
  });

  it('slurmctld restart (5 s down): nothing cancelled, removed or resubmitted; serving continues', async () => {
    expectKept(await controllerRestartScenario(context(), { downMs: 5_000 }));
  });

  it('scheduler SIGKILL and restart: clients retry, 0 duplicate submissions', async () => {
    // While the scheduler is down, clients only get connection refusals: they must retry
    // for longer than the restart takes. openai's default (2 retries after 0.5 s and 1 s,
    // each less up to 25 % jitter) gives up 1.1 to 1.5 s after the kill: less than a
    // restart takes on a busy machine (538 ms down + 810 ms to serve was seen failing on a
    // fresh machine). A defect of the test, which bet on the machine's speed: clients that
    // must ride out a restart retry longer (5 retries: at least ~11 s). Reproduce the old
    // failure, deterministically, with the old retries and a longer outage:
    //   ES_REL_RESTART_RETRIES=2 ES_REL_RESTART_DOWN_MS=1500 \
    //     pnpm exec vitest run --project reliability packages/chaos/test/faults.rel.test.ts
    // Serving that survives the scheduler itself is the data-plane issue's promise.
    const clientRetries = Number(process.env.ES_REL_RESTART_RETRIES ?? 5);
    const downMs = Number(process.env.ES_REL_RESTART_DOWN_MS ?? 500);
    expectKept(await schedulerRestartScenario(context(), { downMs, clientRetries }));
  });

  it('hostile input: every answer a clean 4xx, no crash, memory back near baseline', async () => {
    const result = await hostileScenario(context(), { logDir, model: 'mock-model' });
    expectKept(result);
  });

  // Root only (it creates the unprivileged user; CI runs as root). Last of the faults: a
  // scheduler whose workers obey an unsigned 409 loses every worker to its squatter.
  it.skipIf(!runningAsRoot())(
    'another user of the cluster: engines refuse it, nothing it can read holds a key, public routes show no address, a squatter on the scheduler port during a restart learns nothing replayable and stops no worker, a replayed admin request is refused',
    async () => {
      expectKept(await otherUserScenario(context()));
    },
  );

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

describe('engines that die mid-stream (short profile)', () => {
  it('every stream they cut half-way is continued on the other engine: 0 cut, none restarted, content exact; nothing hangs', async () => {
    const result = await engineMisbehaviourScenario({
      logDir: mkdtempSync(join(tmpdir(), 'es-chaos-mid-')),
      schedulerId: uniqueJobPrefix('relmid').slice(3, -1),
      label: 'engine dies mid-stream',
      engineFlags: '--die-mid-stream 40',
      durationMs: 15_000,
      continuable: true,
      log: (m) => process.stdout.write(`[chaos] ${m}\n`),
    });
    for (const [check, violations] of Object.entries(result.checks)) {
      expect
        .soft(violations, `${result.fault}: ${check} (${result.notes?.join('; ') ?? ''})`)
        .toBe(0);
    }
    expect(result.requests.lost).toBe(0);
  });
});
