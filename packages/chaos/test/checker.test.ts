import { describe, expect, it } from 'vitest';
import {
  checkDrainRouting,
  checkHostileAnswers,
  checkRequests,
  inWindow,
  detectionTime,
  duplicateSubmissions,
  maxLiveJobs,
  parseQueue,
  parseSchedulerLog,
  parseSsPids,
  renderReport,
  summarize,
  timeToCapacity,
  type QueueSample,
  type RequestRecord,
  type SchedulerEvent,
} from '../src/index.js';

let n = 0;
function req(fields: Partial<RequestRecord>): RequestRecord {
  return {
    id: `r${++n}`,
    stream: false,
    start: 0,
    end: 10,
    bytes: 5,
    outcome: 'ok',
    attempts: 1,
    ...fields,
  };
}

describe('summarize and checkRequests', () => {
  const history = [
    req({}),
    req({ attempts: 3 }),
    req({ stream: true, firstByte: 5, outcome: 'error-event' }),
    req({ outcome: 'error-status', status: 400 }),
    req({ outcome: 'error-status', status: 502 }),
    req({ stream: true, firstByte: 5, outcome: 'truncated' }),
    req({ stream: true, outcome: 'hung' }),
  ];

  it('counts a lost non-streaming request, a silent truncation and a hung stream as lost', () => {
    expect(summarize(history)).toEqual({
      sent: 7,
      succeeded: 2,
      retried: 1,
      erroredCleanly: 2,
      lost: 3,
    });
  });

  it('names each broken promise', () => {
    const v = checkRequests(history);
    expect(v.lostNonStreaming.map((r) => r.status)).toEqual([400, 502]);
    expect(v.silentTruncations).toHaveLength(1);
    expect(v.hung).toHaveLength(1);
    expect(v.uncleanStreams).toHaveLength(0);
  });

  it('treats a reset stream as unclean and a reset non-streaming request as lost', () => {
    const v = checkRequests([
      req({ stream: true, firstByte: 3, outcome: 'reset' }),
      req({ outcome: 'reset' }),
    ]);
    expect(v.uncleanStreams).toHaveLength(1);
    expect(v.lostNonStreaming).toHaveLength(1);
    expect(v.silentTruncations).toHaveLength(0);
  });

  it('treats a stream cut by a connection error after its first byte as unclean', () => {
    const v = checkRequests([
      req({ stream: true, firstByte: 3, outcome: 'error-status', status: 502 }),
    ]);
    expect(v.uncleanStreams).toHaveLength(1);
  });
});

describe('inWindow', () => {
  it('includes the requests in flight when the fault struck', () => {
    const before = req({ start: 0, end: 900 });
    const inFlight = req({ start: 500, end: 1_500 });
    const during = req({ start: 1_200, end: 1_300 });
    const after = req({ start: 2_500, end: 2_600 });
    expect(inWindow([before, inFlight, during, after], 1_000, 2_000)).toEqual([inFlight, during]);
  });
});

describe('checkDrainRouting', () => {
  const events: SchedulerEvent[] = [
    { time: 1_000, event: 'ready', workerId: 'w1' },
    { time: 2_000, event: 'draining', workerId: 'w1' },
  ];
  it('flags a request that started after the drain notice and reached the draining worker', () => {
    const late = req({ worker: 'w1', start: 2_100 });
    const violations = checkDrainRouting(
      [req({ worker: 'w1', start: 1_900 }), late, req({ worker: 'w2', start: 3_000 })],
      events,
    );
    expect(violations).toEqual([{ request: late, drainAt: 2_000 }]);
  });
  it('allows requests within the tolerance of the notice', () => {
    expect(checkDrainRouting([req({ worker: 'w1', start: 2_040 })], events, 50)).toEqual([]);
  });
  it('allows requests once the worker is ready again (registered anew), until its next drain', () => {
    const again: SchedulerEvent[] = [
      ...events,
      { time: 2_500, event: 'gone', workerId: 'w1' },
      { time: 3_000, event: 'ready', workerId: 'w1' },
      { time: 4_000, event: 'gone', workerId: 'w1' },
    ];
    const during = req({ worker: 'w1', start: 2_800 });
    const back = req({ worker: 'w1', start: 3_500 });
    const late = req({ worker: 'w1', start: 4_200 });
    expect(checkDrainRouting([during, back, late], again)).toEqual([
      { request: during, drainAt: 2_000 },
      { request: late, drainAt: 4_000 },
    ]);
  });
});

describe('queue and scheduler checks', () => {
  it('finds the largest number of live jobs, ignoring ended ones', () => {
    const queue: QueueSample[] = [
      { time: 1, jobs: { '1': 'RUNNING', '2': 'RUNNING' } },
      { time: 2, jobs: { '1': 'RUNNING', '2': 'PENDING', '3': 'PENDING', '4': 'CANCELLED' } },
    ];
    expect(maxLiveJobs(queue).max).toBe(3);
    expect(maxLiveJobs(queue).sample?.time).toBe(2);
  });

  it('counts a restart that adopts every job and submits again as duplicates', () => {
    const events: SchedulerEvent[] = [
      { time: 5, event: 'submitted', jobId: '1' },
      { time: 10, event: 'adopted', jobId: '1' },
      { time: 10, event: 'adopted', jobId: '2' },
      { time: 11, event: 'submitted', jobId: '3' },
    ];
    expect(duplicateSubmissions(events, 10, 2)).toEqual({
      adopted: 2,
      submitted: 1,
      duplicates: 1,
    });
    expect(duplicateSubmissions(events, 10, 3).duplicates).toBe(0);
  });

  it('measures detection and time to capacity', () => {
    const events: SchedulerEvent[] = [
      { time: 100, event: 'ready', workerId: 'w1' },
      { time: 1_400, event: 'draining', workerId: 'w1' },
    ];
    expect(detectionTime(events, 1_000, (e) => e.workerId === 'w1')).toBe(400);
    const capacity = [
      { time: 900, ready: 6 },
      { time: 1_500, ready: 4 },
      { time: 4_000, ready: 6 },
    ];
    expect(timeToCapacity(capacity, 1_000, 6)).toBe(3_000);
    expect(timeToCapacity(capacity.slice(0, 2), 1_000, 6)).toBeUndefined();
    expect(timeToCapacity([{ time: 2_000, ready: 6 }], 1_000, 6)).toBe(0);
  });
});

describe('parsers', () => {
  it('reads lifecycle events from pino lines and skips the rest', () => {
    const text = [
      '{"level":30,"time":5,"event":"draining","jobId":"7","workerId":"7.0.1","reason":"SIGTERM","msg":"x"}',
      '{"level":30,"time":6,"msg":"no event"}',
      'plain text',
      '{"level":30,"time":7,"event":"subm',
    ].join('\n');
    expect(parseSchedulerLog(text)).toEqual([
      { time: 5, event: 'draining', jobId: '7', workerId: '7.0.1', reason: 'SIGTERM' },
    ]);
  });
  it('reads squeue and ss output', () => {
    expect(parseQueue('12 RUNNING\n 13 PENDING\n\n')).toEqual({ '12': 'RUNNING', '13': 'PENDING' });
    expect(
      parseSsPids(
        'LISTEN 0 511 127.0.0.1:8001 0.0.0.0:* users:(("node",pid=4242,fd=21),("node",pid=4243,fd=3))',
      ),
    ).toEqual([4242, 4243]);
  });
});

describe('checkHostileAnswers', () => {
  const errorBody = '{"error":{"message":"m","type":"NotFound"}}';
  it('accepts OpenAI-shaped 4xx bodies and empty protocol refusals, and flags the rest', () => {
    const ok = {
      name: 'a',
      status: 400,
      body: '{"error":{"message":"bad","type":"BadRequestError"}}',
      expect: [400],
    };
    const protocol = { name: 'b', status: 431, body: '', expect: [431] };
    const crash = {
      name: 'c',
      status: 500,
      body: '{"error":{"message":"x","type":"y"}}',
      expect: [400],
    };
    const shapeless = { name: 'd', status: 400, body: 'Bad Request', expect: [400] };
    const chunked = {
      name: 'e',
      status: 404,
      body: `${errorBody.length.toString(16)}\r\n${errorBody}\r\n0\r\n\r\n`,
      expect: [404],
    };
    expect(
      checkHostileAnswers([ok, protocol, crash, shapeless, chunked]).map((a) => a.name),
    ).toEqual(['c', 'd']);
  });
});

describe('renderReport', () => {
  it('writes one row per fault and marks broken promises', () => {
    const md = renderReport(
      [
        {
          fault: 'preemption',
          requests: { sent: 10, succeeded: 9, retried: 1, erroredCleanly: 1, lost: 0 },
          detectionMs: [100, 300],
          capacityMs: 12_000,
          checks: { lost: 0, drainRouting: 2 },
        },
      ],
      { profile: 'short' },
    );
    expect(md).toContain('| preemption | 10 | 9 | 1 | 1 | 0 | 200 ms | 300 ms | 12.0 s |');
    expect(md).toContain('drainRouting 2 ✗');
  });
});
