/**
 * The demand wave's figures and promises, pure functions over the two runs' histories (a
 * greedy scheduler and a demand-aware one under the same wave of load): node-hours from the
 * squeue samples, time to first token, the scale events, the first request from zero, and
 * the checks `scripts/chaos --profile demand-wave` reports.
 */
import { maxLiveJobs, percentile, summarize } from './checker.js';
import type { History, QueueSample, RequestRecord, SchedulerEvent } from './history.js';
import { judge } from './judge.js';
import type { FaultResult } from './report.js';

/** When one run's wave happened, ms since epoch. */
export interface WaveTimes {
  /** The scheduler started (the history's start). */
  started: number;
  /** The first idle phase began (greedy: once every node was ready): node-hours count from here. */
  start: number;
  /** The burst's first request. */
  burstStart: number;
  /** The burst's last request ended; the idle tail starts. */
  burstEnd: number;
  /** The tail ended: node-hours count until here. */
  end: number;
  /** The scheduler and its jobs were stopped (the history's end). */
  stopped: number;
}

/** One run of the wave, as recorded. */
export interface WaveRun {
  /** `greedy` or `demand-aware`. */
  name: string;
  /** The scheduler flags that make the difference (`--max-nodes M` alone for greedy). */
  flags: string[];
  maxNodes: number;
  times: WaveTimes;
  history: History;
}

/** The scaling settings of the demand-aware run, in seconds (what the report states). */
export interface WaveScaling {
  targetInFlight: number;
  windowS: number;
  upDelayS: number;
  downDelayS: number;
}

/** A change of a deployment's target, read from its `scaled` event. */
export interface ScaleChange {
  time: number;
  from: number;
  to: number;
  why: string;
}

/** The figures of one run. */
export interface WaveFigures {
  /** Node-seconds of RUNNING jobs between `times.start` and `times.end`. */
  nodeSeconds: number;
  /** squeue samples in that span, and the longest gap between two of them (ms). */
  samples: number;
  longestSampleGapMs: number;
  ttftP50?: number;
  ttftP95?: number;
  /** Most live jobs (pending or running) in any squeue sample of the whole run. */
  maxLive: number;
  scale: ScaleChange[];
  /** Burst end → live jobs 0 for good (undefined: never, within the run). */
  toZeroMs?: number;
  first?: FirstRequest;
}

/** The burst's first request, the one a demand-aware scheduler at zero must answer. */
export interface FirstRequest {
  id: string;
  outcome: string;
  attempts: number;
  /** Its start → first token (streams) or answer (non-streaming), ms. */
  answerMs?: number;
  /** Live jobs of the scheduler in the last squeue sample before it was sent. */
  liveAtStart?: number;
}

export const LOST = 'lost requests';
export const CUT = 'streams cut';
export const FIRST_RETRIED = 'first request from zero not answered on its one attempt';
export const FIRST_NOT_AT_ZERO = 'first request not sent at 0 nodes (the row proves nothing)';
export const NOT_TO_MAX = 'burst never scaled to --max-nodes (the wave proves nothing)';
export const FEWER = 'demand-aware node-hours not below greedy';
/** The name of the back-to-zero check for a bound of `ms`. */
export const backToZeroCheck = (ms: number) =>
  `nodes not back to 0 within ${Math.round(ms / 1000)} s of the burst's end`;

/**
 * How long after the burst's end the demand-aware scheduler may still hold a node, s:
 * 2 × down delay + window + 30 s. By `decideScale`'s rule the target falls once the need has
 * stayed below it for the down delay, to the most need seen meanwhile; the window still
 * averages the burst's last seconds when that time starts, so the first fall may stop at 1 or
 * more nodes and the last one comes a down delay later; 30 s for the drain, the cancel and
 * squeue to show it.
 */
export function backToZeroBoundS(s: WaveScaling): number {
  return 2 * s.downDelayS + s.windowS + 30;
}

/** Live jobs (any state but an ended one) in one squeue sample. */
export function liveJobs(sample: QueueSample): number {
  return maxLiveJobs([sample]).max;
}

/**
 * Node-seconds of RUNNING jobs between `from` and `to`: each sample's RUNNING jobs (one node
 * each) held until the next sample (the last until `to`), clipped to the span.
 */
export function nodeSeconds(queue: readonly QueueSample[], from: number, to: number): number {
  const sorted = [...queue].sort((a, b) => a.time - b.time);
  let ms = 0;
  for (const [i, q] of sorted.entries()) {
    const until = sorted[i + 1]?.time ?? to;
    const overlap = Math.min(until, to) - Math.max(q.time, from);
    if (overlap <= 0) continue;
    ms += overlap * Object.values(q.jobs).filter((s) => s === 'RUNNING').length;
  }
  return ms / 1000;
}

/** The `scaled` events (`reason` "from → to node(s): why"), in time order. */
export function scaleChanges(events: readonly SchedulerEvent[]): ScaleChange[] {
  const out: ScaleChange[] = [];
  for (const e of events) {
    if (e.event !== 'scaled' || e.reason === undefined) continue;
    const m = /^(\d+) → (\d+) nodes?: ?(.*)$/s.exec(e.reason);
    if (m === null) continue;
    out.push({ time: e.time, from: Number(m[1]), to: Number(m[2]), why: m[3] ?? '' });
  }
  return out.sort((a, b) => a.time - b.time);
}

/**
 * Time from `after` until live jobs are 0 in every sample up to `until`; undefined when the
 * last sample by then still shows a live job (or there is none).
 */
export function timeToZero(
  queue: readonly QueueSample[],
  after: number,
  until: number,
): number | undefined {
  const within = [...queue].filter((q) => q.time <= until).sort((a, b) => a.time - b.time);
  const last = within.at(-1);
  if (last === undefined || liveJobs(last) > 0) return undefined;
  let zeroSince = last.time;
  for (let i = within.length - 1; i >= 0 && liveJobs(within[i]!) === 0; i--) {
    zeroSince = within[i]!.time;
  }
  return Math.max(0, zeroSince - after);
}

/** Time to first token of the successful streams (first chunk − start), ms. */
export function ttfts(requests: readonly RequestRecord[]): number[] {
  return requests
    .filter((r) => r.stream && r.outcome === 'ok' && r.firstByte !== undefined)
    .map((r) => r.firstByte! - r.start);
}

const seqOf = (id: string) => Number(id.split('-').at(-1));

/** The first request the burst sent (earliest start, then lowest sequence number). */
export function firstRequest(
  requests: readonly RequestRecord[],
  queue: readonly QueueSample[],
): FirstRequest | undefined {
  const first = [...requests].sort((a, b) => a.start - b.start || seqOf(a.id) - seqOf(b.id))[0];
  if (first === undefined) return undefined;
  const before = [...queue].filter((q) => q.time <= first.start).sort((a, b) => b.time - a.time);
  const out: FirstRequest = { id: first.id, outcome: first.outcome, attempts: first.attempts };
  if (first.firstByte !== undefined) out.answerMs = first.firstByte - first.start;
  if (before[0] !== undefined) out.liveAtStart = liveJobs(before[0]);
  return out;
}

/** The figures of one run (see {@link WaveFigures}). */
export function waveFigures(run: WaveRun): WaveFigures {
  const { queue, requests, events } = run.history;
  const { start, end, burstEnd, stopped } = run.times;
  const inSpan = queue.filter((q) => q.time >= start && q.time < end).map((q) => q.time);
  let gap = 0;
  for (let i = 1; i < inSpan.length; i++) gap = Math.max(gap, inSpan[i]! - inSpan[i - 1]!);
  const ttft = ttfts(requests);
  const figures: WaveFigures = {
    nodeSeconds: nodeSeconds(queue, start, end),
    samples: inSpan.length,
    longestSampleGapMs: gap,
    maxLive: maxLiveJobs(queue).max,
    scale: scaleChanges(events),
  };
  const p50 = percentile(ttft, 50);
  const p95 = percentile(ttft, 95);
  if (p50 !== undefined) figures.ttftP50 = p50;
  if (p95 !== undefined) figures.ttftP95 = p95;
  const toZero = timeToZero(queue, burstEnd, Math.min(end, stopped));
  if (toZero !== undefined) figures.toZeroMs = toZero;
  const first = firstRequest(requests, queue);
  if (first !== undefined) figures.first = first;
  return figures;
}

/** What the wave is judged against. */
export interface WaveInput {
  greedy: WaveRun;
  demandAware: WaveRun;
  scaling: WaveScaling;
}

/** The wave's rows (greedy, demand-aware, the comparison) and each run's figures. */
export interface WaveJudgement {
  results: FaultResult[];
  greedy: WaveFigures;
  demandAware: WaveFigures;
  /** The back-to-zero bound ({@link backToZeroBoundS}), ms. */
  backToZeroMs: number;
}

const hours = (seconds: number) => (seconds / 3600).toFixed(3);

/** One run's row: every promise of {@link judge} over its whole history, plus lost and cut. */
function runRow(run: WaveRun, figures: WaveFigures, extra: Record<string, number>): FaultResult {
  const { history, times } = run;
  const judged = judge({
    requests: history.requests,
    journal: history.journal,
    events: history.events,
    queue: history.queue,
    maxNodes: run.maxNodes,
    ...(history.engine === undefined ? {} : { engine: history.engine }),
  });
  const requests = summarize(history.requests);
  return {
    fault: `${run.name}${run.flags.length === 0 ? '' : ` (${run.flags.join(' ')})`}`,
    requests,
    detectionMs: [],
    checks: {
      ...judged.checks,
      [LOST]: requests.lost,
      [CUT]: history.requests.filter((r) => r.stream && r.outcome === 'error-event').length,
      ...extra,
    },
    notes: [
      `${hours(figures.nodeSeconds)} node-hours (${Math.round(figures.nodeSeconds)} node-s) over ${Math.round((times.end - times.start) / 1000)} s of wave; ${figures.samples} squeue samples, longest gap ${figures.longestSampleGapMs} ms; at most ${figures.maxLive} live jobs`,
      ...Object.entries(judged.offenders).map(([check, o]) => `${check}: ${o.join('; ')}`),
    ],
    window: { from: times.started, to: times.stopped },
    run: run.name,
  };
}

/**
 * Judge the wave: each run by every promise of {@link judge} over its whole history (live
 * jobs never above --max-nodes among them), 0 lost, 0 streams cut; the demand-aware run also
 * answers the burst's first request at 0 nodes on its one attempt, reaches --max-nodes in the
 * burst and is back to 0 nodes within {@link backToZeroBoundS} of the burst's end; and it
 * uses fewer node-hours than the greedy one.
 */
export function judgeWave(input: WaveInput): WaveJudgement {
  const greedy = waveFigures(input.greedy);
  const demandAware = waveFigures(input.demandAware);
  const backToZeroMs = backToZeroBoundS(input.scaling) * 1000;
  const first = demandAware.first;
  const maxTo = Math.max(0, ...demandAware.scale.map((s) => s.to));
  const results = [
    runRow(input.greedy, greedy, {}),
    runRow(input.demandAware, demandAware, {
      [FIRST_RETRIED]: first?.outcome === 'ok' && first.attempts === 1 ? 0 : 1,
      [FIRST_NOT_AT_ZERO]: first?.liveAtStart === 0 ? 0 : 1,
      [NOT_TO_MAX]: maxTo >= input.demandAware.maxNodes ? 0 : 1,
      [backToZeroCheck(backToZeroMs)]:
        demandAware.toZeroMs !== undefined && demandAware.toZeroMs <= backToZeroMs ? 0 : 1,
    }),
    {
      fault: 'greedy vs demand-aware',
      requests: summarize([
        ...input.greedy.history.requests,
        ...input.demandAware.history.requests,
      ]),
      detectionMs: [],
      checks: { [FEWER]: demandAware.nodeSeconds < greedy.nodeSeconds ? 0 : 1 },
      notes: [
        `node-hours: greedy ${hours(greedy.nodeSeconds)}, demand-aware ${hours(demandAware.nodeSeconds)} (${greedy.nodeSeconds > 0 ? Math.round((100 * demandAware.nodeSeconds) / greedy.nodeSeconds) : '—'} % of greedy)`,
      ],
    },
  ];
  return { results, greedy, demandAware, backToZeroMs };
}
