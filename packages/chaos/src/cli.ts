#!/usr/bin/env node
/**
 * `scripts/chaos`: the long profile. Starts a scheduler on the SLURM dev cluster (sbatch
 * behind a PATH shim), keeps a mixed load running, injects every fault one after another,
 * judges the whole run and writes `reports/reliability.md` with its raw history next to it
 * (`reports/reliability-history.jsonl.gz`). Exit code 1 when a scenario could not run, a
 * promise was broken or capacity did not come back, with the reasons printed.
 *
 * `scripts/chaos --profile demand-wave` runs the demand wave instead (`demand-wave.ts`): the
 * same idle → burst → idle load against a greedy and a demand-aware scheduler, written to
 * `reports/demand-wave.md`.
 *
 * `scripts/chaos --recheck <history>` judges a kept history again and compares.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cancelByNamePrefix, repoRoot, uniqueJobPrefix } from '@es/testkit';
import { summarize } from './checker.js';
import { demandAwareFlags, demandWave, renderDemandWaveReport } from './demand-wave.js';
import { backToZeroBoundS } from './demand-wave-checks.js';
import { judge } from './judge.js';
import { startLoad } from './load.js';
import { readRunRecord, recheck, writeRunRecord, type RunRecord } from './record.js';
import { brokenChecks, renderReport, type FaultResult } from './report.js';
import { createSbatchShim } from './sbatch-shim.js';
import { waitForCapacity, waitForIdleNodes, type ChaosContext } from './scenario-kit.js';
import { scenariosOf, type ScenarioRun } from './scenario-registry.js';
import { sampleCapacity, sampleQueue, startSchedulerProcess } from './scheduler-process.js';

/** The long profile's scenarios, in the order they run (shared scheduler first). */
const SCENARIOS = scenariosOf('long');
const FAULTS = SCENARIOS.map((s) => s.name);

/**
 * Faults planted on purpose, one per family of checks, to prove a real run reports them:
 * `stale-routing` (the proxy keeps routing to workers that left routing for up to 10 s),
 * `drop-chunk` (every mock engine drops the 3rd content chunk of each stream),
 * `double-submit` (sbatch submits every replacement twice), `silent-cut` (every engine cuts
 * each stream after 10 chunks, more often than the proxy continues one (`--max-continuations`
 * 3), and the proxy ends such a stream without its error event), `continue-from-scratch` (the
 * proxy continues a cut generation from its prompt alone: the engines log a restart, the
 * client's text repeats); and for the data plane's promises: `in-process-data-plane` (the
 * shared scheduler serves `/v1` itself, `--proxy-processes 0`: its SIGKILL closes the client
 * port), `scheduler-stays-down` (scheduler-down restarts the scheduler only after the
 * replacement of the dead node was waited for), `proxy-kill-every-process` (es-proxy-kill
 * kills every data-plane process, not one), `proxy-no-respawn` (es-proxy-kill stops the
 * data plane's supervisor until the respawn bound has passed).
 */
const PLANTS = [
  'stale-routing',
  'drop-chunk',
  'double-submit',
  'silent-cut',
  'continue-from-scratch',
  'in-process-data-plane',
  'scheduler-stays-down',
  'proxy-kill-every-process',
  'proxy-no-respawn',
] as const;

/** Data-plane processes of the shared scheduler: 2, so one can be killed (es-proxy-kill). */
const PROXY_PROCESSES = 2;

const { values } = parseArgs({
  options: {
    profile: { type: 'string', default: 'long' },
    out: { type: 'string' },
    'max-nodes': { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    only: { type: 'string' },
    'stop-seconds': { type: 'string', default: '60' },
    'scheduler-down-seconds': { type: 'string', default: '120' },
    'sbatch-fail-seconds': { type: 'string', default: '40' },
    'misbehaviour-seconds': { type: 'string', default: '30' },
    plant: { type: 'string' },
    recheck: { type: 'string' },
    wave: { type: 'string', default: '60,90,110' },
    'wave-concurrency': { type: 'string' },
    seed: { type: 'string', default: '1' },
    'target-in-flight': { type: 'string', default: '2' },
    'scale-window': { type: 'string', default: '5' },
    'scale-up-delay': { type: 'string', default: '10' },
    'scale-down-delay': { type: 'string', default: '30' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    `usage: scripts/chaos [--out reports/reliability.md] [--max-nodes 3] [--concurrency 8]\n` +
      `                     [--only ${FAULTS.join(',')}]\n` +
      `                     [--stop-seconds 60] [--sbatch-fail-seconds 40] [--misbehaviour-seconds 30]\n` +
      `                     [--scheduler-down-seconds 120]\n` +
      `                     [--plant ${PLANTS.join(',')}] (faults planted on purpose: the run must report them)\n` +
      `       scripts/chaos --profile demand-wave [--out reports/demand-wave.md] [--max-nodes 3]\n` +
      `                     [--wave 60,90,110] (idle,burst,idle seconds) [--wave-concurrency <max-nodes x 2 x target>]\n` +
      `                     [--seed 1] [--target-in-flight 2] [--scale-window 5] [--scale-up-delay 10] [--scale-down-delay 30]\n` +
      `       scripts/chaos --recheck reports/reliability-history.jsonl.gz (judge a kept history again)\n`,
  );
  process.exit(0);
}
const fail = (message: string): never => {
  process.stderr.write(`chaos: ${message}\n`);
  process.exit(2);
};
const positive = (name: string, value: string | undefined): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) fail(`--${name} must be a positive integer, got ${value}`);
  return n;
};
const profile = values.profile;
if (profile !== 'long' && profile !== 'demand-wave') {
  fail(`unknown --profile ${profile}; one of long, demand-wave`);
}
const maxNodes = positive('max-nodes', values['max-nodes']);
const concurrency = positive('concurrency', values.concurrency);
const misbehaviourMs = positive('misbehaviour-seconds', values['misbehaviour-seconds']) * 1000;
const only = new Set((values.only ?? FAULTS.join(',')).split(',').map((s) => s.trim()));
for (const f of only) {
  if (!FAULTS.includes(f)) fail(`unknown fault ${f}; one of ${FAULTS.join(', ')}`);
}
const plants = new Set(
  (values.plant ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);
for (const p of plants) {
  if (!PLANTS.includes(p as (typeof PLANTS)[number])) {
    fail(`unknown --plant ${p}; one of ${PLANTS.join(', ')}`);
  }
}
const wave = (values.wave ?? '').split(',').map((v) => Number(v));
if (wave.length !== 3 || wave.some((v) => !Number.isFinite(v) || v <= 0)) {
  fail(`--wave must be three positive numbers of seconds (idle,burst,idle), got ${values.wave}`);
}
const scaling = {
  targetInFlight: positive('target-in-flight', values['target-in-flight']),
  windowS: positive('scale-window', values['scale-window']),
  upDelayS: positive('scale-up-delay', values['scale-up-delay']),
  downDelayS: positive('scale-down-delay', values['scale-down-delay']),
};
if (profile === 'demand-wave') {
  if (values.only !== undefined || values.plant !== undefined) {
    fail('--only and --plant select faults of the long profile, not of --profile demand-wave');
  }
  const bound = backToZeroBoundS(scaling);
  if ((wave[2] ?? 0) < bound + 10) {
    fail(
      `--wave's last idle phase (${wave[2]} s) must outlast the back-to-zero bound (2 × --scale-down-delay + --scale-window + 30 = ${bound} s) by 10 s`,
    );
  }
}
const log = (m: string) => process.stdout.write(`[chaos ${new Date().toISOString()}] ${m}\n`);

/** Commit, date, load and machine: the provenance every report carries at its top. */
function provenance(): Record<string, string> {
  const git = (args: string[]) =>
    execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8' }).trim();
  let commit: string;
  try {
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    commit = `${git(['rev-parse', 'HEAD'])}${dirty ? ' + uncommitted changes' : ''}`;
  } catch {
    commit = 'unknown (not a git checkout)';
  }
  const cpu = cpus();
  return {
    Commit: commit,
    Date: new Date().toISOString(),
    Machine: `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, Node ${process.version}`,
    Command: `scripts/chaos ${process.argv.slice(2).join(' ')}`.trim(),
  };
}

const load1 = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');

/** Results that broke a promise, as printable lines. */
function verdict(results: readonly FaultResult[]): string[] {
  const lines: string[] = [];
  for (const r of results) {
    const broken = brokenChecks(r);
    if (r.requests.lost > 0) broken.push(`lost requests (${r.requests.lost})`);
    if (broken.length > 0) lines.push(`${r.fault}: ${broken.join(', ')}`);
  }
  return lines;
}

/** A row for a scenario that could not run: always a broken promise. */
function couldNotRun(fault: string, error: unknown): FaultResult {
  return {
    fault,
    requests: { sent: 0, succeeded: 0, retried: 0, erroredCleanly: 0, lost: 0 },
    detectionMs: [],
    checks: { 'scenario could not run': 1 },
    notes: [(error as Error).message ?? String(error)],
  };
}

async function runAll(meta: Record<string, string>): Promise<RunRecord> {
  const results: FaultResult[] = [];
  const histories: RunRecord['histories'] = {};
  const logDir = mkdtempSync(join(tmpdir(), 'es-chaos-long-'));
  const schedulerId = uniqueJobPrefix('chaos').slice(3, -1);
  const shim = createSbatchShim(join(logDir, 'shim'));
  const engineFlags = [
    '--tokens-per-second 50 --ttft 50',
    ...(plants.has('drop-chunk') ? ['--drop-chunk 3'] : []),
    ...(plants.has('silent-cut') ? ['--die-mid-stream 10'] : []),
  ].join(' ');
  const proxyPlants = [
    ...(plants.has('stale-routing') ? ['stale-routing=10000'] : []),
    ...(plants.has('silent-cut') ? ['silent-stream-cut'] : []),
    ...(plants.has('continue-from-scratch') ? ['continue-from-scratch'] : []),
  ];
  const plantEnv: Record<string, string> =
    proxyPlants.length > 0 ? { ES_PLANT_FAULTS: proxyPlants.join(',') } : {};
  const settings: ScenarioRun = {
    profile: 'long',
    logDir,
    schedulerId,
    shim,
    plants,
    env: plantEnv,
    concurrency,
    stopMs: Number(values['stop-seconds']) * 1000,
    schedulerDownMs: Number(values['scheduler-down-seconds']) * 1000,
    sbatchFailMs: Number(values['sbatch-fail-seconds']) * 1000,
    misbehaviourMs,
    log,
  };
  const selected = SCENARIOS.filter((s) => only.has(s.name));

  const shared = selected.filter((s) => s.scheduler === 'shared');
  if (shared.length > 0) {
    log(`log dir ${logDir}; waiting for ${maxNodes} idle nodes`);
    await waitForIdleNodes(maxNodes, 15 * 60_000);
    const scheduler = await startSchedulerProcess({
      backend: 'slurm',
      logDir,
      schedulerId,
      maxNodes,
      engineExtraArgs: engineFlags,
      env: { PATH: shim.path, ...plantEnv },
      proxyProcesses: plants.has('in-process-data-plane') ? 0 : PROXY_PROCESSES,
    });
    const target = maxNodes * 2;
    let ctx: ChaosContext | undefined;
    const startedAt = Date.now();
    try {
      await waitForCapacity(() => scheduler.controlUrl, target, 180_000, 3_000);
      // Planted after start-up, so that only replacements are submitted twice.
      if (plants.has('double-submit')) shim.setMode('double');
      ctx = {
        scheduler,
        load: startLoad({ baseUrl: scheduler.url, model: 'mock-model', concurrency }),
        // The control plane's count: each data-plane process answers /health from its table.
        capacity: sampleCapacity(() => scheduler.controlUrl),
        queue: sampleQueue(scheduler.jobName),
        maxNodes,
        target,
        capacityTimeoutMs: 180_000,
        excused: new Set(),
        log,
      };
      for (const scenario of shared) {
        try {
          results.push(await scenario.run({ ...settings, ctx }));
        } catch (error) {
          log(`${scenario.name} could not run: ${(error as Error).message}`);
          results.push(couldNotRun(scenario.name, error));
        }
        // Let the pool settle between faults so each window sees one fault.
        await waitForCapacity(() => scheduler.controlUrl, target, 180_000, 2_000).catch(
          () => undefined,
        );
      }
    } finally {
      await ctx?.load.stop();
      await ctx?.capacity.stop();
      await ctx?.queue.stop();
      shim.releaseHung();
      await scheduler.stop();
      await cancelByNamePrefix(`es-${schedulerId}`);
    }
    if (ctx !== undefined) {
      // Every request of the run, in and between the fault windows.
      const history = {
        requests: ctx.load.records,
        events: scheduler.events(),
        queue: ctx.queue.samples,
        capacity: ctx.capacity.samples,
        journal: scheduler.journal(),
        engine: scheduler.engineLog(),
        maxNodes,
      };
      histories.main = history;
      const endedAt = Date.now();
      const excused = [...ctx.excused];
      const { checks, offenders } = judge({ ...history, excused: ctx.excused });
      const excusedSet = new Set(excused);
      results.push({
        fault: 'whole run (every request, in and between faults)',
        requests: summarize(history.requests.filter((r) => !excusedSet.has(r.id))),
        detectionMs: [],
        checks,
        notes: [
          `${history.requests.length} requests over ${Math.round((endedAt - startedAt) / 1000)} s; ${history.journal.filter((e) => e.type === 'attempt').length} upstream attempts and ${history.journal.filter((e) => e.type === 'route').length} routing changes in the journal; ${excused.length} requests excused by their fault`,
          ...Object.entries(offenders).map(([check, o]) => `${check}: ${o.join('; ')}`),
        ],
        window: { from: 0, to: Number.MAX_SAFE_INTEGER },
        excused,
        run: 'main',
      });
    }
  }

  // Scenarios under their own one-node scheduler: each result is judged from its own history.
  for (const scenario of selected.filter((s) => s.scheduler === 'own')) {
    const name = scenario.name;
    try {
      const result = await scenario.run(settings);
      if (result.history !== undefined) {
        histories[name] = { ...result.history, maxNodes: 1 };
        delete result.history;
        result.run = name;
      }
      results.push(result);
    } catch (error) {
      log(`${name} could not run: ${(error as Error).message}`);
      results.push(couldNotRun(name, error));
    }
  }
  meta['Scheduler log'] = join(logDir, 'scheduler.log');
  return { meta, results, histories };
}

async function main(): Promise<number> {
  if (values.recheck !== undefined) {
    const record = readRunRecord(values.recheck);
    const { results, mismatches, notJudged } = recheck(record);
    process.stdout.write(
      `recheck of ${values.recheck} (${record.meta.Commit ?? 'unknown commit'}, ${record.meta.Date ?? ''}):\n`,
    );
    for (const m of mismatches) {
      process.stdout.write(
        `  MISMATCH ${m.fault}: ${m.figure} recorded ${m.recorded}, judged again ${m.rejudged}\n`,
      );
    }
    if (notJudged.length > 0) {
      process.stdout.write(`  kept as recorded (no request history): ${notJudged.join(', ')}\n`);
    }
    const broken = verdict(results);
    for (const line of broken) process.stdout.write(`  BROKEN ${line}\n`);
    process.stdout.write(
      `  ${results.length} results, ${mismatches.length} mismatches, ${broken.length} broken\n`,
    );
    return mismatches.length > 0 || broken.length > 0 ? 1 : 0;
  }

  if (profile === 'demand-wave') return runDemandWave();
  const meta = provenance();
  const loadBefore = load1();
  const record = await runAll(meta);
  meta.Load = `${loadBefore} at the start, ${load1()} at the end (1 / 5 / 15 min averages)`;
  meta.Profile = `long: SLURM dev cluster, --max-nodes ${maxNodes}, TP 4 of 8 GPUs (2 mock engines per node, 50 tokens/s, TTFT 50 ms, each logging its requests and first tokens), scheduler --stall-timeout 3 --proxy-processes ${plants.has('in-process-data-plane') ? 0 : PROXY_PROCESSES}, ${concurrency} concurrent clients (official openai client, maxRetries 2 (0 during scheduler-restart), half streaming, temperature 0, only continuable requests: one-message chats, n 1, no tools or structured output)`;
  if (plants.size > 0) meta['Planted faults'] = [...plants].join(', ');
  const { out, historyFile } = outputs('reliability.md');
  meta.History = `${shownPath(historyFile)} (re-check: scripts/chaos --recheck ${shownPath(historyFile)})`;
  meta.Continuations =
    '"generations restarted from scratch": an engine received a request again with the same request id and prompt length after an engine had sent a first token for it (a continuation carries prompt + generated tokens; a retry before any token is not a restart, nor a continuation the proxy started from 0 received tokens, its event says so: the dead engine\'s first token was still in flight), judged from the engines\' request logs; "streams cut": streams that ended with an error event (or reset, or silently) and were not refused, in the rows whose fault cuts generations; refusals are read from the scheduler\'s `continuation` events and listed in the notes by reason';
  meta.Columns =
    'sent/succeeded/retried (client attempts > 1)/errored cleanly (stream ended with an error event)/lost (non-streaming failure, 4xx, silent truncation, reset, hung > 20 s); detection = fault → first scheduler event about it (or first dip of ready capacity); capacity = fault → all workers ready again ("never" breaks a promise, "—" not measured)';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, renderReport(record.results, meta));
  writeRunRecord(historyFile, record);
  log(`wrote ${out} and ${historyFile}`);
  const broken = verdict(record.results);
  if (broken.length === 0) {
    log('every promise kept');
    return 0;
  }
  for (const line of broken) process.stderr.write(`chaos: BROKEN ${line}\n`);
  return 1;
}

/** The report path (`--out`, else `reports/<name>`) and its history file next to it. */
function outputs(name: string): { out: string; historyFile: string } {
  const out = resolve(values.out ?? join(repoRoot, 'reports', name));
  return { out, historyFile: out.replace(/\.md$/, '') + '-history.jsonl.gz' };
}

/** A path relative to the repository when inside it. */
function shownPath(path: string): string {
  return relative(repoRoot, path).startsWith('..') ? path : relative(repoRoot, path);
}

/** `--profile demand-wave`: both runs, the report, its history; exit 1 on a broken promise. */
async function runDemandWave(): Promise<number> {
  const meta = provenance();
  const loadBefore = load1();
  const [idleS = 60, burstS = 90, tailS = 90] = wave;
  const concurrency =
    values['wave-concurrency'] === undefined
      ? maxNodes * 2 * scaling.targetInFlight
      : positive('wave-concurrency', values['wave-concurrency']);
  const seed = Number(values.seed);
  const logDir = mkdtempSync(join(tmpdir(), 'es-chaos-wave-'));
  log(`demand wave: log dir ${logDir}`);
  const runs = await demandWave({
    logDir,
    schedulerId: uniqueJobPrefix('wave').slice(3, -1),
    maxNodes,
    phases: { idleMs: idleS * 1000, burstMs: burstS * 1000, tailMs: tailS * 1000 },
    concurrency,
    seed,
    scaling,
    log,
  });
  const { out, historyFile } = outputs('demand-wave.md');
  meta.Load = `${loadBefore} at the start, ${load1()} at the end (1 / 5 / 15 min averages)`;
  meta.Profile = `demand wave on the SLURM dev cluster, run twice with load seed ${seed}: idle ${idleS} s → burst ${burstS} s of ${concurrency} concurrent clients (official openai client, maxRetries 0, half streaming, request ids wave-1, wave-2, ... in the same order and kind in both runs, a request silent 120 s is hung) → idle ${tailS} s; 2 mock engines per node (TP 4 of 8 GPUs, 50 tokens/s, TTFT 50 ms). Greedy: \`--max-nodes ${maxNodes}\` (holds every node; its wave starts once all ${maxNodes * 2} workers are ready). Demand-aware: \`${demandAwareFlags(maxNodes, scaling).join(' ')}\` (default --cold-start-wait), its wave starting as it serves, with no node`;
  meta['Node-hours'] =
    "from squeue samples every 0.5 s of each scheduler's job name: each sample's RUNNING jobs (one node each) held until the next sample, from the start of the wave's first idle phase to the end of its last; TTFT: first chunk − start of the successful streams";
  meta.History = `${shownPath(historyFile)} (re-check of the judged promises: scripts/chaos --recheck ${shownPath(historyFile)})`;
  meta['Scheduler logs'] =
    `${join(logDir, 'greedy', 'scheduler.log')}, ${join(logDir, 'demand-aware', 'scheduler.log')}`;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, renderDemandWaveReport(runs, runs.judgement, meta));
  const histories: RunRecord['histories'] = {};
  for (const run of [runs.greedy, runs.demandAware]) {
    histories[run.name] = { ...run.history, maxNodes: run.maxNodes };
  }
  writeRunRecord(historyFile, { meta, results: runs.judgement.results, histories });
  log(`wrote ${out} and ${historyFile}`);
  const broken = verdict(runs.judgement.results);
  if (broken.length === 0) {
    log('every promise kept');
    return 0;
  }
  for (const line of broken) process.stderr.write(`chaos: BROKEN ${line}\n`);
  return 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`chaos: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
