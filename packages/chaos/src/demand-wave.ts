/**
 * The demand wave (`scripts/chaos --profile demand-wave`): the same wave of load (idle →
 * burst → idle, one seed) against a greedy scheduler (`--max-nodes M`) and then a
 * demand-aware one (`--min-nodes 0 --max-nodes M`, short delays), each on the SLURM dev
 * cluster with its own log directory; judged by `judgeWave`, rendered by
 * {@link renderDemandWaveReport} into `reports/demand-wave.md`.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cancelByNamePrefix } from '@es/testkit';
import { brokenChecks, promiseChecks, type FaultResult } from './report.js';
import {
  backToZeroCheck,
  judgeWave,
  type WaveFigures,
  type WaveJudgement,
  type WaveRun,
  type WaveScaling,
} from './demand-wave-checks.js';
import { startLoad } from './load.js';
import { waitForCapacity, waitForIdleNodes } from './scenario-kit.js';
import { sampleCapacity, sampleQueue, startSchedulerProcess } from './scheduler-process.js';

/** The wave's phases, ms. */
export interface WavePhases {
  idleMs: number;
  burstMs: number;
  tailMs: number;
}

export interface DemandWaveOptions {
  logDir: string;
  schedulerId: string;
  maxNodes: number;
  phases: WavePhases;
  /** Concurrent clients during the burst. */
  concurrency: number;
  /** The load's seed (the same for both runs). */
  seed: number;
  scaling: WaveScaling;
  /** A request silent this long is `hung` (covers a start from zero; default 120 s). */
  hangTimeoutMs?: number;
  /** `local` runs node jobs on this machine (no squeue: no node-hours; for development). */
  backend?: 'slurm' | 'local';
  log: (message: string) => void;
}

/** Engines of the wave: 2 mock engines per node (TP 4 of 8 GPUs), 50 tokens/s, TTFT 50 ms. */
const ENGINE_FLAGS = '--tokens-per-second 50 --ttft 50';
const MODEL = 'mock-model';

/** The demand-aware run's scheduler flags. */
export function demandAwareFlags(maxNodes: number, s: WaveScaling): string[] {
  return [
    '--min-nodes',
    '0',
    '--max-nodes',
    String(maxNodes),
    '--target-in-flight',
    String(s.targetInFlight),
    '--scale-window',
    String(s.windowS),
    '--scale-up-delay',
    String(s.upDelayS),
    '--scale-down-delay',
    String(s.downDelayS),
  ];
}

/** One run of the wave against a scheduler started with `flags`. */
async function runOnce(
  options: DemandWaveOptions,
  name: 'greedy' | 'demand-aware',
): Promise<WaveRun> {
  const { maxNodes, phases, log } = options;
  const backend = options.backend ?? 'slurm';
  const flags =
    name === 'greedy'
      ? ['--max-nodes', String(maxNodes)]
      : demandAwareFlags(maxNodes, options.scaling);
  // --max-nodes is set by startSchedulerProcess; the rest of the flags are extra.
  const extraArgs = flags.filter(
    (_, i) => flags[i] !== '--max-nodes' && flags[i - 1] !== '--max-nodes',
  );
  const schedulerId = `${options.schedulerId}${name === 'greedy' ? 'g' : 'd'}`;
  const jobName = `es-${schedulerId}-${MODEL}`;
  if (backend === 'slurm') {
    log(`${name}: waiting for ${maxNodes} idle nodes`);
    await waitForIdleNodes(maxNodes, 15 * 60_000);
  }
  const started = Date.now();
  const queue = sampleQueue(jobName);
  const scheduler = await startSchedulerProcess({
    backend,
    logDir: join(options.logDir, name),
    schedulerId,
    maxNodes,
    engineExtraArgs: ENGINE_FLAGS,
    extraArgs,
  });
  const capacity = sampleCapacity(() => scheduler.controlUrl);
  let stopped = started;
  try {
    if (name === 'greedy') {
      log(`greedy: waiting for ${maxNodes * 2} ready workers`);
      await waitForCapacity(() => scheduler.controlUrl, maxNodes * 2, 180_000, 3_000);
    }
    const start = Date.now();
    log(`${name}: idle ${phases.idleMs / 1000} s`);
    await sleep(phases.idleMs);
    const burstStart = Date.now();
    log(`${name}: burst of ${options.concurrency} clients for ${phases.burstMs / 1000} s`);
    // Clients without retries: a request the scheduler let fail is lost, and the first one
    // from zero is answered on its one attempt or not at all.
    const load = startLoad({
      baseUrl: scheduler.url,
      model: MODEL,
      concurrency: options.concurrency,
      maxRetries: 0,
      hangTimeoutMs: options.hangTimeoutMs ?? 120_000,
      idPrefix: 'wave',
      seed: options.seed,
    });
    await sleep(phases.burstMs);
    const requests = await load.stop();
    const burstEnd = Date.now();
    log(`${name}: ${requests.length} requests; idle ${phases.tailMs / 1000} s`);
    await sleep(phases.tailMs);
    const end = Date.now();
    await capacity.stop();
    await scheduler.stop();
    await cancelByNamePrefix(jobName);
    await sleep(2_000);
    await queue.stop();
    stopped = Date.now();
    return {
      name,
      flags,
      maxNodes,
      times: { started, start, burstStart, burstEnd, end, stopped },
      history: {
        requests,
        events: scheduler.events(),
        queue: queue.samples,
        capacity: capacity.samples,
        journal: scheduler.journal(),
        engine: scheduler.engineLog(),
      },
    };
  } finally {
    if (stopped === started) {
      await capacity.stop();
      await scheduler.stop();
      await cancelByNamePrefix(jobName);
      await queue.stop();
    }
  }
}

/** Both runs, greedy first, and their judgement. */
export async function demandWave(
  options: DemandWaveOptions,
): Promise<{ greedy: WaveRun; demandAware: WaveRun; judgement: WaveJudgement }> {
  const greedy = await runOnce(options, 'greedy');
  const demandAware = await runOnce(options, 'demand-aware');
  return {
    greedy,
    demandAware,
    judgement: judgeWave({ greedy, demandAware, scaling: options.scaling }),
  };
}

const seconds = (ms: number | undefined) =>
  ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`;
const msOrS = (ms: number | undefined) =>
  ms === undefined ? '—' : ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;

/**
 * The report: provenance (`context`: commit, command ...), one row per run (node-hours,
 * requests, TTFT), the demand-aware run's scale events and first request from zero, then
 * every promise check with its notes.
 */
export function renderDemandWaveReport(
  runs: { greedy: WaveRun; demandAware: WaveRun },
  judgement: WaveJudgement,
  context: Record<string, string>,
): string {
  const broken = judgement.results.filter((r) => brokenChecks(r).length > 0 || r.requests.lost > 0);
  const row = (run: WaveRun, f: WaveFigures, result: FaultResult | undefined) => {
    const q = result?.requests;
    return `| ${run.name} | ${(f.nodeSeconds / 3600).toFixed(3)} | ${Math.round(f.nodeSeconds)} | ${q?.sent ?? 0} | ${q?.succeeded ?? 0} | ${q?.lost ?? 0} | ${msOrS(f.ttftP50)} | ${msOrS(f.ttftP95)} | ${f.maxLive} |`;
  };
  const da = runs.demandAware;
  const t0 = da.times.start;
  const first = judgement.demandAware.first;
  const lines = [
    '# Demand wave: greedy vs demand-aware scaling',
    '',
    '<!-- Generated whole by scripts/chaos --profile demand-wave from one run; never edit by hand. -->',
    '',
    ...Object.entries(context).map(([k, v]) => `- ${k}: ${v}`),
    `- Verdict: ${broken.length === 0 ? 'every promise kept' : `broken: ${broken.map((r) => `${r.fault}: ${brokenChecks(r).join(', ')}`).join('; ')}`}`,
    '',
    '| Run | Node-hours | Node-seconds | Sent | Served | Lost | TTFT p50 | TTFT p95 | Most live jobs |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    row(runs.greedy, judgement.greedy, judgement.results[0]),
    row(da, judgement.demandAware, judgement.results[1]),
    '',
    `## Scale events of the demand-aware run (time from the start of its wave; burst ${seconds(da.times.burstStart - t0)} → ${seconds(da.times.burstEnd - t0)}, end ${seconds(da.times.end - t0)})`,
    '',
    '| Time | From → to | Why |',
    '| ---: | --- | --- |',
    ...judgement.demandAware.scale.map(
      (s) => `| ${seconds(s.time - t0)} | ${s.from} → ${s.to} | ${s.why.replaceAll('|', '\\|')} |`,
    ),
    '',
    `Nodes back to 0 ${judgement.demandAware.toZeroMs === undefined ? 'never within the run ✗' : `${seconds(judgement.demandAware.toZeroMs)} after the burst's last request ended`} (bound ${seconds(judgement.backToZeroMs)}: ${backToZeroCheck(judgement.backToZeroMs)}).`,
    '',
    '## The first request from zero',
    '',
    first === undefined
      ? 'No request was sent ✗'
      : `\`${first.id}\`, sent with ${first.liveAtStart ?? '?'} live jobs of the demand-aware scheduler in the last squeue sample before it (official openai client, maxRetries 0): ${first.outcome} on ${first.attempts} attempt${first.attempts === 1 ? '' : 's'}, first token (stream) or answer ${seconds(first.answerMs)} after it was sent.`,
    ...promiseChecks(judgement.results),
  ];
  return `${lines.join('\n')}\n`;
}
