import { describe, expect, it } from 'vitest';
import { createDataPlaneLedger } from '../src/index.js';
import type { DataPlaneRecords } from '../src/index.js';
// The shared fixture (@es/pool does not depend on @es/testkit, which depends on it).
import { dataPlaneReport as report } from '../../testkit/src/data-plane.js';

const request = (requestId: string) => ({
  requestId,
  path: '/v1/chat/completions',
  stream: true,
  status: 200,
  outcome: 'ok',
  latencyMs: 12,
  queuedMs: 0,
  retries: 0,
});

describe('data-plane ledger', () => {
  it('lists each process with its last report, its lost reports and its state', () => {
    let now = 10_000;
    const ledger = createDataPlaneLedger({ now: () => now, silentMs: 5_000 });
    expect(ledger.record(report(1))).toBe('recorded');
    now += 1_000;
    expect(ledger.record(report(4, { tableVersion: 9, ejected: ['w-2'] }))).toBe('recorded');
    expect(ledger.list()).toEqual([
      {
        id: 'login1:4242',
        host: 'login1',
        pid: 4242,
        listen: 'http://0.0.0.0:8780',
        startedAt: 1_000,
        lastReportAt: 11_000,
        seq: 4,
        missedReports: 2,
        tableVersion: 9,
        tableAt: 1_500,
        subscribed: true,
        inFlight: { 'w-1': 2 },
        ejected: ['w-2'],
        queued: {},
        droppedRecords: 0,
        state: 'serving',
      },
    ]);
    now += 5_001;
    expect(ledger.list()[0]!.state).toBe('silent');
    now += 50_000 - 5_001;
    expect(ledger.list()).toHaveLength(1); // exactly 10 × silentMs: still listed
    now += 1;
    expect(ledger.list()).toEqual([]);
  });

  it('sums the requests in flight per worker over the processes that report', () => {
    let now = 10_000;
    const ledger = createDataPlaneLedger({ now: () => now, silentMs: 5_000 });
    ledger.record(report(1, { inFlight: { 'w-1': 2, 'w-2': 1 } }));
    ledger.record(report(1, { id: 'login2:7', pid: 7, inFlight: { 'w-1': 3 } }));
    expect(ledger.inFlightByWorker()).toEqual(
      new Map([
        ['w-1', 5],
        ['w-2', 1],
      ]),
    );
    // The first process falls silent (dead, or cut off): its counts no longer hold.
    now += 4_000;
    ledger.record(report(2, { id: 'login2:7', pid: 7, inFlight: { 'w-1': 1 } }));
    now += 1_001;
    expect(ledger.inFlightByWorker()).toEqual(new Map([['w-1', 1]]));
  });

  it('sums the requests waiting per deployment over the processes that report', () => {
    let now = 10_000;
    const ledger = createDataPlaneLedger({ now: () => now, silentMs: 5_000 });
    // A process of a version without queue reports counts none.
    ledger.record(report(1));
    ledger.record(report(1, { id: 'login2:7', pid: 7, queued: { cold: 2, warm: 1 } }));
    ledger.record(report(1, { id: 'login3:8', pid: 8, queued: { cold: 3 } }));
    expect(ledger.queuedByDeployment()).toEqual(
      new Map([
        ['cold', 5],
        ['warm', 1],
      ]),
    );
    expect(ledger.list().find((p) => p.id === 'login2:7')!.queued).toEqual({ cold: 2, warm: 1 });
    // The latest report replaces the previous; a silent process no longer counts.
    now += 4_000;
    ledger.record(report(2, { id: 'login2:7', pid: 7, queued: { cold: 1 } }));
    now += 1_001;
    expect(ledger.queuedByDeployment()).toEqual(new Map([['cold', 1]]));
  });

  it('hands on the records of each report once, a re-sent report changes nothing', () => {
    let now = 10_000;
    const handed: DataPlaneRecords[] = [];
    const ledger = createDataPlaneLedger({
      now: () => now,
      onRecords: (records) => handed.push(records),
    });
    expect(ledger.record(report(1, { requests: [request('a')] }))).toBe('recorded');
    now += 1_000;
    // Its answer was lost, so the process sends the same records again: counted once.
    expect(ledger.record(report(1, { requests: [request('a')], tableVersion: 99 }))).toBe('stale');
    expect(ledger.record(report(2, { requests: [request('b')] }))).toBe('recorded');
    expect(handed.map((r) => r.requests.map((q) => q.requestId))).toEqual([['a'], ['b']]);
    expect(ledger.list()[0]!.tableVersion).toBe(0);
  });

  it('takes a restarted process under the same id as a new one', () => {
    const ledger = createDataPlaneLedger({ now: () => 10_000 });
    ledger.record(report(40));
    expect(ledger.record(report(1, { pid: 5000, startedAt: 9_000 }))).toBe('recorded');
    expect(ledger.list()[0]).toMatchObject({ pid: 5000, seq: 1, missedReports: 0 });
  });
});
