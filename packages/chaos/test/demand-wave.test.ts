import { describe, expect, it } from 'vitest';
import {
  backToZeroBoundS,
  backToZeroCheck,
  CHECKS,
  CUT,
  expectedContent,
  FEWER,
  FIRST_NOT_AT_ZERO,
  FIRST_RETRIED,
  judgeWave,
  LOST,
  nodeSeconds,
  NOT_TO_MAX,
  renderDemandWaveReport,
  scaleChanges,
  seededFraction,
  timeToZero,
  type JournalEntry,
  type QueueSample,
  type RequestRecord,
  type SchedulerEvent,
  type WaveInput,
  type WaveRun,
} from '../src/index.js';

const SCALING = { targetInFlight: 2, windowS: 5, upDelayS: 10, downDelayS: 30 };
const BOUND_MS = backToZeroBoundS(SCALING) * 1000;
const TIMES = {
  started: -10_000,
  start: 0,
  burstStart: 60_000,
  burstEnd: 150_000,
  end: 260_000,
  stopped: 270_000,
};

/** squeue samples every second over [from, to) with `jobs` in each. */
function samples(from: number, to: number, jobs: Record<string, string>): QueueSample[] {
  const out: QueueSample[] = [];
  for (let t = from; t < to; t += 1_000) out.push({ time: t, jobs: { ...jobs } });
  return out;
}

const RUNNING3 = { '1': 'RUNNING', '2': 'RUNNING', '3': 'RUNNING' };

/** A request of the burst that kept every promise, served by worker `w1`. */
function ok(seq: number, stream: boolean, start: number, firstByteAfter = 50): RequestRecord {
  const id = `wave-${seq}`;
  const r: RequestRecord = {
    id,
    stream,
    prompt: `chaos request ${id}`,
    maxTokens: 20,
    worker: 'w1',
    start,
    firstByte: start + firstByteAfter,
    end: start + firstByteAfter + 400,
    bytes: 10,
    outcome: 'ok',
    attempts: 1,
    status: 200,
  };
  r.content = expectedContent(r)!;
  return r;
}

/** A run whose history keeps every promise (jobs 1-3 submitted, worker w1 routable). */
function run(
  name: string,
  queue: QueueSample[],
  requests: RequestRecord[],
  scaled: SchedulerEvent[] = [],
): WaveRun {
  const journal: JournalEntry[] = [
    { type: 'start', time: -9_000, pid: 1 },
    { type: 'route', time: -8_000, deployment: 'm', workerId: 'w1', routable: true, reason: 'x' },
    ...requests.map((r): JournalEntry => ({
      type: 'attempt',
      time: r.start,
      requestId: r.id,
      deployment: 'm',
      workerId: 'w1',
      attempt: 1,
    })),
  ];
  const events: SchedulerEvent[] = [
    ...['1', '2', '3'].map((jobId) => ({ time: -9_500, event: 'submitted', jobId })),
    ...scaled,
  ];
  return {
    name,
    flags: name === 'greedy' ? ['--max-nodes', '3'] : ['--min-nodes', '0', '--max-nodes', '3'],
    maxNodes: 3,
    times: { ...TIMES },
    history: { requests, events, queue, capacity: [], journal },
  };
}

const scaledEvent = (time: number, from: number, to: number): SchedulerEvent => ({
  time,
  event: 'scaled',
  reason: `${from} → ${to} node${to === 1 ? '' : 's'}: load`,
});

/** The wave of a greedy and a demand-aware run that keep every promise. */
function cleanWave(): WaveInput {
  const greedyRequests = [ok(1, true, 60_000), ok(2, false, 60_000), ok(3, true, 61_000)];
  // From zero: the first stream waits 8 s for a node.
  const daRequests = [ok(1, true, 60_000, 8_000), ok(2, false, 60_000, 8_100), ok(3, true, 70_000)];
  return {
    greedy: run('greedy', samples(-9_000, 265_000, RUNNING3), greedyRequests),
    demandAware: run(
      'demand-aware',
      [
        ...samples(-9_000, 61_000, {}),
        ...samples(61_000, 64_000, { '1': 'PENDING' }),
        ...samples(64_000, 72_000, { '1': 'RUNNING' }),
        ...samples(72_000, 200_000, RUNNING3),
        ...samples(200_000, 265_000, {}),
      ],
      daRequests,
      [
        scaledEvent(60_100, 0, 1),
        scaledEvent(71_000, 1, 3),
        scaledEvent(182_000, 3, 1),
        scaledEvent(197_000, 1, 0),
      ],
    ),
    scaling: SCALING,
  };
}

/** The broken checks of each row, by row. */
function broken(input: WaveInput): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const r of judgeWave(input).results) {
    const bad = Object.entries(r.checks).filter(([, n]) => n > 0);
    if (bad.length > 0) out[r.fault.split(' (')[0]!] = Object.fromEntries(bad);
  }
  return out;
}

describe('the demand wave: every promise, proven able to fail by one planted violation each', () => {
  it('passes the clean wave, with every check of judge on each run', () => {
    const judged = judgeWave(cleanWave());
    expect(broken(cleanWave())).toEqual({});
    const [greedy, demandAware, comparison] = judged.results;
    for (const c of CHECKS.filter((c) => !c.includes('engine') && !c.includes('scratch'))) {
      expect(greedy!.checks[c], c).toBe(0);
      expect(demandAware!.checks[c], c).toBe(0);
    }
    expect(Object.keys(demandAware!.checks)).toEqual(
      expect.arrayContaining([
        LOST,
        CUT,
        FIRST_RETRIED,
        FIRST_NOT_AT_ZERO,
        NOT_TO_MAX,
        backToZeroCheck(BOUND_MS),
      ]),
    );
    expect(comparison!.checks).toEqual({ [FEWER]: 0 });
    expect(judged.greedy.nodeSeconds).toBe(3 * 260);
    // 1 node for 8 s, 3 for 128 s.
    expect(judged.demandAware.nodeSeconds).toBe(8 + 3 * 128);
    expect(judged.demandAware.toZeroMs).toBe(50_000);
    expect(judged.demandAware.first).toEqual({
      id: 'wave-1',
      outcome: 'ok',
      attempts: 1,
      answerMs: 8_000,
      liveAtStart: 0,
    });
    expect(judged.demandAware.scale.map((s) => `${s.from}→${s.to}`)).toEqual([
      '0→1',
      '1→3',
      '3→1',
      '1→0',
    ]);
  });

  it('reports a lost request', () => {
    const w = cleanWave();
    const r = w.greedy.history.requests[1]!;
    Object.assign(r, { outcome: 'error-status', status: 502, firstByte: undefined });
    expect(broken(w).greedy).toMatchObject({ [LOST]: 1, 'non-streaming lost': 1 });
  });

  it('reports a stream cut (an error event)', () => {
    const w = cleanWave();
    const r = w.demandAware.history.requests[2]!;
    Object.assign(r, { outcome: 'error-event', content: r.content!.slice(0, 5) });
    expect(broken(w)['demand-aware']).toEqual({ [CUT]: 1 });
  });

  it('reports more live jobs than --max-nodes in any squeue sample of the whole run', () => {
    const w = cleanWave();
    // After the wave, while the scheduler stops: still part of the run's history.
    w.demandAware.history.events.push({ time: -9_500, event: 'submitted', jobId: '4' });
    w.demandAware.history.queue.push({ time: 266_000, jobs: { ...RUNNING3, '4': 'PENDING' } });
    expect(broken(w)['demand-aware']).toEqual({ 'over-acquisition': 1 });
  });

  it('reports a demand-aware run that used as many node-hours as the greedy one', () => {
    const w = cleanWave();
    w.demandAware.history.queue = samples(-9_000, 265_000, RUNNING3);
    expect(broken(w)['greedy vs demand-aware']).toEqual({ [FEWER]: 1 });
  });

  it('reports nodes never back to 0, and back to 0 later than the bound', () => {
    const never = cleanWave();
    never.demandAware.history.queue.push(...samples(265_000, 266_000, { '1': 'RUNNING' }));
    never.demandAware.history.queue = never.demandAware.history.queue.filter(
      (q) => q.time < 200_000 || q.time >= 265_000,
    );
    expect(broken(never)['demand-aware']).toEqual({ [backToZeroCheck(BOUND_MS)]: 1 });

    const late = cleanWave();
    const zeroAt = TIMES.burstEnd + BOUND_MS + 1_000;
    late.demandAware.history.queue = [
      ...late.demandAware.history.queue.filter((q) => q.time < 200_000),
      ...samples(200_000, zeroAt, { '1': 'RUNNING' }),
      ...samples(zeroAt, 265_000, {}),
    ];
    expect(broken(late)['demand-aware']).toEqual({ [backToZeroCheck(BOUND_MS)]: 1 });
  });

  it('reports a first request from zero that needed a second attempt', () => {
    const w = cleanWave();
    w.demandAware.history.requests[0]!.attempts = 2;
    expect(broken(w)['demand-aware']).toEqual({ [FIRST_RETRIED]: 1 });
  });

  it('reports a first request sent while a node was held (the row proves nothing)', () => {
    const w = cleanWave();
    const atStart = w.demandAware.history.queue.find((q) => q.time === 60_000)!;
    atStart.jobs = { '1': 'PENDING' };
    expect(broken(w)['demand-aware']).toEqual({ [FIRST_NOT_AT_ZERO]: 1 });
  });

  it('reports a burst that never scaled to --max-nodes', () => {
    const w = cleanWave();
    w.demandAware.history.events = w.demandAware.history.events.map((e) =>
      e.reason?.startsWith('1 → 3') === true ? scaledEvent(e.time, 1, 2) : e,
    );
    expect(broken(w)['demand-aware']).toEqual({ [NOT_TO_MAX]: 1 });
  });
});

describe('the demand wave figures', () => {
  it('counts RUNNING jobs held from each sample to the next, clipped to the span', () => {
    const queue: QueueSample[] = [
      { time: 0, jobs: { a: 'RUNNING', b: 'PENDING' } },
      { time: 10_000, jobs: { a: 'RUNNING', b: 'RUNNING' } },
      { time: 20_000, jobs: { a: 'COMPLETING', b: 'RUNNING' } },
    ];
    // 1 × 5 s (from 5 s) + 2 × 10 s + 1 × 5 s (to 25 s).
    expect(nodeSeconds(queue, 5_000, 25_000)).toBe(30);
    expect(nodeSeconds(queue, 30_000, 40_000)).toBe(10);
    expect(nodeSeconds([], 0, 10_000)).toBe(0);
  });

  it('reads scale events and skips other events', () => {
    expect(
      scaleChanges([
        { time: 2, event: 'scaled', reason: '3 → 1 node: load 0.0 for 30 s' },
        { time: 1, event: 'scaled', reason: '0 → 2 nodes: 8 request(s) waiting' },
        { time: 3, event: 'submitted', jobId: '1' },
      ]),
    ).toEqual([
      { time: 1, from: 0, to: 2, why: '8 request(s) waiting' },
      { time: 2, from: 3, to: 1, why: 'load 0.0 for 30 s' },
    ]);
  });

  it('measures the time to 0 live jobs for good', () => {
    const queue: QueueSample[] = [
      { time: 0, jobs: { a: 'RUNNING' } },
      { time: 5, jobs: {} },
      { time: 10, jobs: { a: 'COMPLETING' } },
      { time: 15, jobs: { a: 'CANCELLED' } },
      { time: 20, jobs: {} },
    ];
    expect(timeToZero(queue, 0, 100)).toBe(15);
    expect(timeToZero(queue, 0, 12)).toBeUndefined();
    expect(timeToZero([], 0, 100)).toBeUndefined();
  });

  it('gives two loads with one seed the same requests, another seed others', () => {
    const kinds = (seed: number) =>
      Array.from({ length: 40 }, (_, i) => seededFraction(seed, i + 1) < 0.5);
    expect(kinds(1)).toEqual(kinds(1));
    expect(kinds(1)).not.toEqual(kinds(2));
    expect(kinds(1).filter(Boolean).length).toBeGreaterThan(5);
    expect(kinds(1).filter(Boolean).length).toBeLessThan(35);
  });

  it('renders the report with its provenance at the top, both runs and the scale events', () => {
    const w = cleanWave();
    const judged = judgeWave(w);
    const md = renderDemandWaveReport({ greedy: w.greedy, demandAware: w.demandAware }, judged, {
      Commit: 'abc123',
      Command: 'scripts/chaos --profile demand-wave',
    });
    const lines = md.split('\n');
    expect(lines.slice(4, 6)).toEqual([
      '- Commit: abc123',
      '- Command: scripts/chaos --profile demand-wave',
    ]);
    expect(md).toContain('- Verdict: every promise kept');
    expect(md).toContain('| greedy | 0.217 | 780 | 3 | 3 | 0 |');
    expect(md).toContain('| demand-aware | 0.109 | 392 | 3 | 3 | 0 |');
    expect(md).toContain('| 71.0 s | 1 → 3 | load |');
    expect(md).toContain('`wave-1`, sent with 0 live jobs');
    w.demandAware.history.queue = samples(-9_000, 265_000, RUNNING3);
    expect(
      renderDemandWaveReport({ greedy: w.greedy, demandAware: w.demandAware }, judgeWave(w), {}),
    ).toContain(`${FEWER} 1 ✗`);
  });
});
