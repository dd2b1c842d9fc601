import { describe, expect, it } from 'vitest';
import {
  checkGlobalRemovals,
  checkRouting,
  judge,
  longestGap,
  parseJournal,
  splitByKilledProcess,
  successGaps,
  type JournalEntry,
  type RequestRecord,
} from '../src/index.js';

const route = (
  pid: number | undefined,
  time: number,
  workerId: string,
  routable: boolean,
  reason = routable ? 'ready' : 'draining: preempted',
): JournalEntry => ({
  type: 'route',
  time,
  deployment: 'm',
  workerId,
  routable,
  reason,
  ...(pid === undefined ? {} : { pid }),
});
const attempt = (
  pid: number | undefined,
  time: number,
  workerId: string,
  requestId = `q${time}`,
): JournalEntry => ({
  type: 'attempt',
  time,
  requestId,
  deployment: 'm',
  workerId,
  attempt: 1,
  ...(pid === undefined ? {} : { pid }),
});
const start = (pid: number, time = 0): JournalEntry => ({ type: 'start', time, pid });

/** Two data-plane processes (pids 11 and 12) that both route to w1 and w2. */
const twoProcesses: JournalEntry[] = [
  start(11),
  start(12),
  route(11, 1, 'w1', true),
  route(11, 1, 'w2', true),
  route(12, 1, 'w1', true),
  route(12, 1, 'w2', true),
];

describe('routing judged per data-plane process', () => {
  it('a worker one process ejected stays routable in the others', () => {
    const journal = [
      ...twoProcesses,
      route(11, 10, 'w1', false, 'unready: ejected for 10000 ms in this process'),
      attempt(12, 20, 'w1'),
      attempt(11, 20, 'w2'),
    ];
    expect(checkRouting(journal)).toEqual([]);
    expect(checkGlobalRemovals(journal)).toEqual([]);
  });

  it('the process that ejected a worker may not route to it (planted: it does)', () => {
    const journal = [
      ...twoProcesses,
      route(11, 10, 'w1', false, 'unready: ejected for 10000 ms in this process'),
      attempt(11, 20, 'w1', 'bad'),
    ];
    const violations = checkRouting(journal);
    expect(violations).toHaveLength(1);
    expect(violations[0]).toMatchObject({ pid: 11, leftAt: 10, attempt: { requestId: 'bad' } });
  });

  it('a restarted process starts with nothing routable; the others keep their tables', () => {
    const journal = [...twoProcesses, start(13, 5), attempt(13, 6, 'w1'), attempt(12, 6, 'w1')];
    const violations = checkRouting(journal);
    expect(violations.map((v) => v.pid)).toEqual([13]);
    expect(violations[0]?.reason).toBe('never routable in this process');
  });

  it('judges a journal of one process without pids as before', () => {
    const journal = [
      start(7),
      route(undefined, 1, 'w1', true),
      route(undefined, 2, 'w1', false, 'gone'),
      attempt(undefined, 3, 'w1'),
      start(8),
      attempt(undefined, 4, 'w1'),
    ];
    expect(checkRouting(journal).map((v) => [v.pid, v.reason])).toEqual([
      [7, 'gone'],
      [8, 'never routable in this process'],
    ]);
  });

  it('reads journal lines with a pid, and skips one cut line per process', () => {
    const text = [
      JSON.stringify(start(11)),
      JSON.stringify(start(12)),
      JSON.stringify(route(11, 1, 'w1', true)),
      '{"type":"attempt","time":2,"requ', // 11 SIGKILLed mid-line, 12 writes on
      JSON.stringify(attempt(12, 3, 'w1')),
      '',
    ].join('\n');
    expect(parseJournal(text)).toHaveLength(4);
    const tooMany = ['{"type":', '{"ty', JSON.stringify(start(1)), '{"x":', 'nope', '{}'];
    expect(() => parseJournal([JSON.stringify(start(1)), ...tooMany].join('\n'))).toThrow(
      /not JSON/,
    );
  });
});

describe('drains and removals are global', () => {
  it('no process may route to a drained worker once the drain had a second to reach it (planted: one never hears of it)', () => {
    const journal = [
      ...twoProcesses,
      // The scheduler's drain reaches process 11; process 12 never hears of it.
      route(11, 100, 'w1', false, 'draining: preempted'),
      attempt(12, 600, 'w1', 'within-the-second'),
      attempt(12, 1_500, 'w1', 'late-1'),
      attempt(12, 1_600, 'w1', 'late-2'),
    ];
    // Process 12's own table still lists w1: only the global check sees it.
    expect(checkRouting(journal)).toEqual([]);
    const violations = checkGlobalRemovals(journal);
    expect(violations.map((v) => v.attempt.type === 'attempt' && v.attempt.requestId)).toEqual([
      'late-1',
      'late-2',
    ]);
    expect(violations[0]).toMatchObject({ pid: 12, removedAt: 100 });
    const { checks, offenders } = judge({
      requests: [],
      journal,
      events: [],
      queue: [],
      maxNodes: 1,
    });
    expect(checks['attempts to drained or removed workers (any process)']).toBe(2);
    expect(offenders['attempts to drained or removed workers (any process)']?.[0]).toContain(
      'late-1 attempt 1 to w1 by pid 12',
    );
  });

  it('allows the one attempt the draining worker refuses, after which the process drops it', () => {
    const journal = [
      ...twoProcesses,
      route(11, 100, 'w1', false, 'draining: preempted'),
      attempt(12, 5_000, 'w1', 'refused'),
      route(12, 5_001, 'w1', false, 'draining: its engine front refuses new requests'),
      attempt(12, 5_002, 'w2', 'moved'),
    ];
    expect(checkGlobalRemovals(journal)).toEqual([]);
    // A second attempt before the refusal is not forgiven.
    const twice = [...journal];
    twice.splice(7, 0, attempt(12, 4_000, 'w1', 'before'));
    expect(
      checkGlobalRemovals(twice).map((v) => v.attempt.type === 'attempt' && v.attempt.requestId),
    ).toEqual(['before']);
  });

  it('forgets a removal when the control plane routes the worker again', () => {
    const journal = [
      ...twoProcesses,
      route(11, 100, 'w1', false, 'gone'),
      route(11, 200, 'w1', true, 'ready'),
      attempt(12, 5_000, 'w1'),
    ];
    expect(checkGlobalRemovals(journal)).toEqual([]);
  });
});

let n = 0;
const req = (fields: Partial<RequestRecord>): RequestRecord => ({
  id: `r${++n}`,
  stream: true,
  start: 0,
  end: 10,
  bytes: 1,
  outcome: 'ok',
  attempts: 1,
  ...fields,
});

describe('gaps in successful responses', () => {
  it('finds every stretch over the bound, from the fault to the end of the window', () => {
    const requests = [
      req({ start: 0, firstByte: 100, end: 900 }),
      req({ start: 0, firstByte: 950, end: 1_400 }),
      // Failures show no progress.
      req({ start: 1_400, end: 2_000, outcome: 'error-status', status: 502 }),
      req({ start: 1_500, firstByte: 3_000, end: 3_200 }),
    ];
    expect(successGaps(requests, 0, 3_500, 1_000)).toEqual([{ from: 1_400, to: 3_000, ms: 1_600 }]);
    expect(longestGap(requests, 0, 3_500)).toBe(1_600);
    // A fault with no success after it at all is one gap to the window's end.
    expect(successGaps([], 0, 5_000, 1_000)).toEqual([{ from: 0, to: 5_000, ms: 5_000 }]);
    expect(successGaps(requests, 0, 1_300, 1_000)).toEqual([]);
  });
});

describe('a data-plane process killed', () => {
  it('counts the failures of the requests it carried apart from everyone else’s', () => {
    const journal = [
      ...twoProcesses,
      attempt(11, 50, 'w1', 'a'),
      attempt(12, 50, 'w1', 'b'),
      attempt(12, 60, 'w2', 'c'),
      attempt(11, 70, 'w2', 'd'),
    ];
    const requests = [
      req({ id: 'a', start: 40, end: 120, outcome: 'reset' }), // carried by 11: excused
      req({ id: 'b', start: 40, end: 120, outcome: 'reset' }), // carried by 12: broken
      req({ id: 'c', start: 55, end: 300 }), // 12's, fine
      req({ id: 'd', start: 60, end: 400 }), // 11's, completed all the same (a client retry)
      req({ id: 'e', start: 90, end: 110, outcome: 'connection-error', stream: false }), // read by 11, never routed
      req({ id: 'f', start: 200, end: 250, outcome: 'error-status', status: 503 }), // after the kill
    ];
    const split = splitByKilledProcess(requests, journal, 11, 100);
    expect(split.carried.map((r) => r.id)).toEqual(['a', 'd', 'e']);
    expect(split.failedCarried.map((r) => r.id)).toEqual(['a', 'e']);
    expect(split.failedOthers.map((r) => r.id)).toEqual(['b', 'f']);
  });
});
