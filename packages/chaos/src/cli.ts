#!/usr/bin/env node
/**
 * `scripts/chaos`: the long profile. Starts a scheduler on the SLURM dev cluster (sbatch
 * behind a PATH shim), keeps a mixed load running, injects every fault one after another and
 * writes `reports/reliability.md`. Exit code 1 when any promise was broken.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cancelByNamePrefix, repoRoot, uniqueJobPrefix } from '@es/testkit';
import { startLoad } from './load.js';
import { renderReport, type FaultResult } from './report.js';
import { createSbatchShim } from './sbatch-shim.js';
import {
  controllerStopScenario,
  controllerRestartScenario,
  engineHangScenario,
  engineKillScenario,
  engineMisbehaviourScenario,
  hostileScenario,
  launchFailureScenario,
  preemptionScenario,
  sbatchFailureScenario,
  scaleScenario,
  schedulerRestartScenario,
  waitForCapacity,
  waitForIdleNodes,
  workerKillScenario,
  type ChaosContext,
} from './scenarios.js';
import { sampleCapacity, sampleQueue, startSchedulerProcess } from './scheduler-process.js';

const FAULTS = [
  'preemption',
  'preemption-grace',
  'engine-kill',
  'engine-hang',
  'worker-kill',
  'scheduler-restart',
  'slurmctld-stop',
  'slurmctld-restart',
  'sbatch-transient',
  'sbatch-hang',
  'sbatch-policy',
  'hostile',
  'scale',
  'engine-die-mid-stream',
  'engine-crash',
  'launch-failure',
  'never-registers',
] as const;
type Fault = (typeof FAULTS)[number];

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: join(repoRoot, 'reports', 'reliability.md') },
    'max-nodes': { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    only: { type: 'string' },
    'stop-seconds': { type: 'string', default: '60' },
    'sbatch-fail-seconds': { type: 'string', default: '40' },
    merge: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    `usage: scripts/chaos [--out reports/reliability.md] [--max-nodes 3] [--concurrency 8]\n` +
      `                     [--only ${FAULTS.join(',')}]\n` +
      `                     [--stop-seconds 60] [--sbatch-fail-seconds 40]\n` +
      `                     [--merge earlier-run.json] (results of an earlier run to include)\n`,
  );
  process.exit(0);
}
const maxNodes = Number(values['max-nodes']);
const concurrency = Number(values.concurrency);
const only = new Set((values.only ?? FAULTS.join(',')).split(',').map((s) => s.trim()));
for (const f of only) {
  if (!FAULTS.includes(f as Fault)) {
    process.stderr.write(`chaos: unknown fault ${f}; one of ${FAULTS.join(', ')}\n`);
    process.exit(2);
  }
}
const log = (m: string) => process.stdout.write(`[chaos ${new Date().toISOString()}] ${m}\n`);

async function main(): Promise<number> {
  // Results of an earlier (partial) run come first, so a long run can be done in parts.
  const results: FaultResult[] =
    values.merge === undefined
      ? []
      : (JSON.parse(readFileSync(values.merge, 'utf8')) as FaultResult[]);
  const logDir = mkdtempSync(join(tmpdir(), 'es-chaos-long-'));
  const schedulerId = uniqueJobPrefix('chaos').slice(3, -1);
  const shim = createSbatchShim(join(logDir, 'shim'));
  log(`log dir ${logDir}; waiting for ${maxNodes} idle nodes`);
  await waitForIdleNodes(maxNodes, 15 * 60_000);
  const scheduler = await startSchedulerProcess({
    backend: 'slurm',
    logDir,
    schedulerId,
    maxNodes,
    engineExtraArgs: '--tokens-per-second 50 --ttft 50',
    env: { PATH: shim.path },
  });
  const target = maxNodes * 2;

  let ctx: ChaosContext | undefined;
  try {
    await waitForCapacity(() => scheduler.url, target, 180_000, 3_000);
    ctx = {
      scheduler,
      load: startLoad({ baseUrl: scheduler.url, model: 'mock-model', concurrency }),
      capacity: sampleCapacity(() => scheduler.url),
      queue: sampleQueue(scheduler.jobName),
      maxNodes,
      target,
      capacityTimeoutMs: 180_000,
      log,
    };
    const c = ctx;
    const runs: [Fault, () => Promise<FaultResult>][] = [
      ['preemption', () => preemptionScenario(c, { highJobSeconds: 30 })],
      ['preemption-grace', () => preemptionScenario(c, { highJobSeconds: 30, graceTime: 15 })],
      ['engine-kill', () => engineKillScenario(c)],
      ['engine-hang', () => engineHangScenario(c, { frozenMs: 20_000 })],
      ['worker-kill', () => workerKillScenario(c)],
      ['scheduler-restart', () => schedulerRestartScenario(c, { downMs: 2_000, clientRetries: 5 })],
      [
        'slurmctld-stop',
        () => controllerStopScenario(c, { stopMs: Number(values['stop-seconds']) * 1000 }),
      ],
      ['slurmctld-restart', () => controllerRestartScenario(c, { downMs: 5_000 })],
      ...(['transient', 'hang', 'policy'] as const).map(
        (mode): [Fault, () => Promise<FaultResult>] => [
          `sbatch-${mode}`,
          () =>
            sbatchFailureScenario(c, shim, {
              mode,
              failMs: Number(values['sbatch-fail-seconds']) * 1000,
            }),
        ],
      ),
      // Longer than the proxy's 30 s body deadline, so the report shows it ending them.
      ['hostile', () => hostileScenario(c, { logDir, model: 'mock-model', lorisMs: 35_000 })],
      ['scale', () => scaleScenario(c, { logDir, model: 'mock-model', durationMs: 30_000 })],
    ];
    for (const [name, run] of runs) {
      if (!only.has(name)) continue;
      try {
        results.push(await run());
      } catch (error) {
        log(`${name} could not run: ${(error as Error).message}`);
        results.push({
          fault: name,
          requests: { sent: 0, succeeded: 0, retried: 0, erroredCleanly: 0, lost: 0 },
          detectionMs: [],
          checks: { 'fault could not be injected': 1 },
          notes: [(error as Error).message],
        });
      }
      // Let the pool settle between faults so each window sees one fault.
      await waitForCapacity(() => scheduler.url, target, 180_000, 2_000).catch(() => undefined);
    }
  } finally {
    await ctx?.load.stop();
    await ctx?.capacity.stop();
    await ctx?.queue.stop();
    shim.releaseHung();
    await scheduler.kill('SIGTERM');
    await cancelByNamePrefix(`es-${schedulerId}`);
  }

  // Engines that misbehave by flag run under their own one-node scheduler.
  const misbehaving: [Fault, string, string][] = [
    ['engine-die-mid-stream', 'engine dies mid-stream', '--die-mid-stream 10'],
    ['engine-crash', 'engine crashes (exit after 40 requests)', '--crash-after 40'],
  ];
  for (const [name, label, engineFlags] of misbehaving) {
    if (!only.has(name)) continue;
    try {
      results.push(
        await engineMisbehaviourScenario({
          logDir: join(logDir, name),
          schedulerId: `${schedulerId}m`,
          label,
          engineFlags,
          durationMs: 30_000,
          concurrency,
          log,
        }),
      );
    } catch (error) {
      log(`${name} could not run: ${(error as Error).message}`);
    }
  }

  // Jobs that never serve, under their own one-node scheduler.
  const neverServing: [Fault, string, string[]][] = [
    ['launch-failure', 'batch script fails at launch', ['exit 1']],
    ['never-registers', 'job runs, worker never registers', ['sleep 100000']],
  ];
  for (const [name, label, setup] of neverServing) {
    if (!only.has(name)) continue;
    try {
      results.push(
        await launchFailureScenario({
          logDir: join(logDir, name),
          schedulerId: `${schedulerId}${name === 'launch-failure' ? 'f' : 'n'}`,
          label,
          setup,
          startupTimeoutS: 15,
          durationMs: 60_000,
          log,
        }),
      );
    } catch (error) {
      log(`${name} could not run: ${(error as Error).message}`);
    }
  }

  const out = resolve(values.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    renderReport(results, {
      Generated: new Date().toISOString(),
      Profile: `long: SLURM dev cluster, --max-nodes ${maxNodes}, TP 4 of 8 GPUs (2 mock engines per node, 50 tokens/s, TTFT 50 ms), ${concurrency} concurrent clients (official openai client, maxRetries 2, half streaming)`,
      Command: `scripts/chaos ${process.argv.slice(2).join(' ')}`.trim(),
      'Scheduler log': join(logDir, 'scheduler.log'),
      Columns:
        'sent/succeeded/retried (client attempts > 1)/errored cleanly (stream error event or 4xx)/lost (non-streaming failure, silent truncation, hung > 20 s); detection = fault → first scheduler event about it (or first dip of ready capacity); capacity = fault → all workers ready again',
    }),
  );
  writeFileSync(out.replace(/\.md$/, '') + '.json', `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote ${out} and its .json`);
  const broken = results.some(
    (r) => r.requests.lost > 0 || Object.values(r.checks).some((n) => n > 0),
  );
  return broken ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`chaos: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
