import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CHECKS,
  capacityCheck,
  parseJournal,
  readRunRecord,
  recheck,
  writeRunRecord,
  checkHostileAnswers,
  checkRequests,
  inWindow,
  detectionTime,
  duplicateSubmissions,
  expectedContent,
  judge,
  maxLiveJobs,
  parseQueue,
  parseSchedulerLog,
  parseSsPids,
  renderReport,
  summarize,
  timeToCapacity,
  type EngineLog,
  type FaultResult,
  type JournalEntry,
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

  it('counts a 4xx, a lost non-streaming request, a silent truncation and a hung stream as lost', () => {
    expect(summarize(history)).toEqual({
      sent: 7,
      succeeded: 2,
      retried: 1,
      erroredCleanly: 1,
      lost: 4,
    });
  });

  it('names each broken promise', () => {
    const v = checkRequests(history);
    expect(v.lostNonStreaming.map((r) => r.status)).toEqual([502]);
    expect(v.clientErrors.map((r) => r.status)).toEqual([400]);
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

  it('keeps only requests a window could touch', () => {
    const before = req({ start: 0, end: 900 });
    const inFlight = req({ start: 500, end: 1_500 });
    const during = req({ start: 1_200, end: 1_300 });
    const after = req({ start: 2_500, end: 2_600 });
    expect(inWindow([before, inFlight, during, after], 1_000, 2_000)).toEqual([inFlight, during]);
  });
});

/**
 * A history that keeps every promise: two routable workers, three requests (a non-streaming
 * answer, a finished stream, a stream cut cleanly with an error event after a prefix of the
 * expected text), two jobs, both submitted by the scheduler.
 */
function cleanHistory() {
  const content = (id: string, maxTokens: number) =>
    expectedContent({
      id,
      stream: false,
      prompt: `chaos request ${id}`,
      maxTokens,
      start: 0,
      end: 0,
      bytes: 0,
      outcome: 'ok',
      attempts: 1,
    })!;
  const ok = (id: string, stream: boolean, worker: string, start: number): RequestRecord => ({
    id,
    stream,
    prompt: `chaos request ${id}`,
    maxTokens: 20,
    content: content(id, 20),
    worker,
    start,
    firstByte: start + 5,
    end: start + 50,
    bytes: 10,
    outcome: 'ok',
    attempts: 1,
    status: 200,
  });
  const cut: RequestRecord = {
    ...ok('c3', true, 'w2', 300),
    content: content('c3', 20).slice(0, 12),
    outcome: 'error-event',
    errorCode: 'upstream_stream_interrupted',
  };
  const requests = [ok('c1', false, 'w1', 100), ok('c2', true, 'w2', 200), cut];
  const journal: JournalEntry[] = [
    { type: 'start', time: 0, pid: 1 },
    { type: 'route', time: 10, deployment: 'm', workerId: 'w1', routable: true, reason: 'ready' },
    { type: 'route', time: 10, deployment: 'm', workerId: 'w2', routable: true, reason: 'ready' },
    ...requests.map((r): JournalEntry => ({
      type: 'attempt',
      time: r.start,
      requestId: r.id,
      deployment: 'm',
      workerId: r.worker!,
      attempt: 1,
    })),
  ];
  const events: SchedulerEvent[] = [
    { time: 1, event: 'submitted', jobId: '1' },
    { time: 2, event: 'submitted', jobId: '2' },
  ];
  const queue: QueueSample[] = [{ time: 50, jobs: { '1': 'RUNNING', '2': 'RUNNING' } }];
  // Each request reached an engine once and got its first token there.
  const engine: EngineLog = {
    requests: requests.map((r) => ({
      at: r.start + 1,
      path: '/v1/chat/completions',
      requestId: r.id,
      promptTokens: 30,
      maxTokens: 20,
      stream: r.stream,
      returnTokenIds: r.stream,
      pid: 100,
    })),
    firstTokens: requests.map((r) => ({
      at: r.start + 4,
      event: 'first-token' as const,
      requestId: r.id,
      path: '/v1/chat/completions',
      promptTokens: 30,
      pid: 100,
    })),
  };
  return { requests, journal, events, queue, maxNodes: 2, engine };
}

/** The checks that report violations, as `name: count`. */
function broken(input: ReturnType<typeof cleanHistory>): Record<string, number> {
  return Object.fromEntries(Object.entries(judge(input).checks).filter(([, n]) => n > 0));
}

describe('judge: every promise, proven able to fail by one planted violation each', () => {
  it('passes the clean history', () => {
    expect(judge(cleanHistory()).checks).toEqual(Object.fromEntries(CHECKS.map((c) => [c, 0])));
  });

  it('passes a stream started on one worker and continued on another (the header names the first)', () => {
    const h = cleanHistory();
    h.journal.push({
      type: 'attempt',
      time: 230,
      requestId: 'c2',
      deployment: 'm',
      workerId: 'w1',
      attempt: 2,
    });
    expect(broken(h)).toEqual({});
  });

  const at = (h: ReturnType<typeof cleanHistory>, i: number) => h.requests[i]!;
  const plants: [string, string, (h: ReturnType<typeof cleanHistory>) => void][] = [
    [
      'a lost non-streaming request',
      'non-streaming lost',
      (h) => {
        Object.assign(at(h, 0), { outcome: 'error-status', status: 502 });
      },
    ],
    [
      'a silently truncated stream',
      'silent truncations',
      (h) => {
        at(h, 1).outcome = 'truncated';
      },
    ],
    [
      'a stalled stream (watchdog fired)',
      'hung clients',
      (h) => {
        at(h, 1).outcome = 'hung';
      },
    ],
    [
      'a stream reset after its first byte',
      'unclean stream ends',
      (h) => {
        at(h, 2).outcome = 'reset';
      },
    ],
    [
      'a 400 answer to a valid request',
      '4xx on valid requests',
      (h) => {
        Object.assign(at(h, 0), { outcome: 'error-status', status: 400 });
      },
    ],
    [
      'a dropped chunk',
      'content not what the engine produced',
      (h) => {
        const words = at(h, 1).content!.split(' ');
        words.splice(2, 1);
        at(h, 1).content = words.join(' ');
      },
    ],
    [
      'a duplicated chunk',
      'content not what the engine produced',
      (h) => {
        const words = at(h, 1).content!.split(' ');
        words.splice(2, 0, words[2]!);
        at(h, 1).content = words.join(' ');
      },
    ],
    [
      'a cut stream whose text is not a prefix of the expected',
      'content not what the engine produced',
      (h) => {
        at(h, 2).content = `x${at(h, 2).content!}`;
      },
    ],
    [
      'a record whose content was never filled',
      'content not what the engine produced',
      (h) => {
        delete at(h, 0).content;
      },
    ],
    [
      'an attempt to an ejected worker, in the same millisecond',
      'attempts to workers out of routing',
      (h) => {
        h.journal.splice(3, 0, {
          type: 'route',
          time: 100,
          deployment: 'm',
          workerId: 'w1',
          routable: false,
          reason: 'unready: ejected for 10000 ms after 3 failed attempts (connect-error)',
        });
      },
    ],
    [
      'an attempt to a worker never routable since the scheduler restarted',
      'attempts to workers out of routing',
      (h) => {
        h.journal.splice(
          3,
          0,
          { type: 'start', time: 90, pid: 2 },
          {
            type: 'route',
            time: 91,
            deployment: 'm',
            workerId: 'w2',
            routable: true,
            reason: 'ready',
          },
        );
      },
    ],
    [
      'an answer the journal has no attempt for',
      'answers missing from the routing journal',
      (h) => {
        h.journal = h.journal.filter((e) => e.type !== 'attempt' || e.requestId !== 'c2');
      },
    ],
    [
      'an answer from another worker than the journal says',
      'answers missing from the routing journal',
      (h) => {
        at(h, 1).worker = 'w1';
      },
    ],
    [
      'an answer the journal only shows continued elsewhere, not started on its worker',
      'answers missing from the routing journal',
      (h) => {
        // The header names w2; the journal has only the continuation's attempt to w1.
        h.journal = h.journal.map((e) =>
          e.type === 'attempt' && e.requestId === 'c2' ? { ...e, workerId: 'w1', attempt: 2 } : e,
        );
      },
    ],
    [
      'an answer without a worker header',
      'answers without a worker header',
      (h) => {
        delete at(h, 0).worker;
        h.journal = h.journal.filter((e) => e.type !== 'attempt' || e.requestId !== 'c1');
        h.journal.push({
          type: 'attempt',
          time: 100,
          requestId: 'c1',
          deployment: 'm',
          workerId: 'w1',
          attempt: 1,
        });
      },
    ],
    [
      'a job submitted twice (sbatch ran again)',
      'jobs the scheduler never submitted',
      (h) => {
        h.queue.push({ time: 60, jobs: { '1': 'RUNNING', '3': 'PENDING' } });
      },
    ],
    [
      'more live jobs than max_nodes',
      'over-acquisition',
      (h) => {
        h.events.push({ time: 3, event: 'submitted', jobId: '3' });
        h.queue.push({ time: 60, jobs: { '1': 'RUNNING', '2': 'RUNNING', '3': 'PENDING' } });
      },
    ],
    [
      'a stream an engine got again from its prompt after its first token (continued from scratch)',
      'generations restarted from scratch',
      (h) => {
        h.engine.requests.push({
          ...h.engine.requests[1]!,
          at: 240,
          path: '/v1/completions',
          pid: 101,
        });
        h.engine.firstTokens.push({ ...h.engine.firstTokens[1]!, at: 290, pid: 101 });
      },
    ],
    [
      'an answer whose first token no engine logged',
      'answers missing from the engine request logs',
      (h) => {
        h.engine.firstTokens = h.engine.firstTokens.filter((f) => f.requestId !== 'c1');
      },
    ],
  ];
  it.each(plants)('reports %s as "%s"', (_name, check, plant) => {
    const h = cleanHistory();
    plant(h);
    expect(broken(h)).toEqual({ [check]: 1 });
  });

  it('a continuation from 0 received tokens is not a restart; one that claims tokens but sends the bare prompt is', () => {
    const h = cleanHistory();
    h.engine.requests.push({
      ...h.engine.requests[1]!,
      at: 240,
      path: '/v1/completions',
      pid: 101,
    });
    h.engine.firstTokens.push({ ...h.engine.firstTokens[1]!, at: 290, pid: 101 });
    const event = (tokens: number): SchedulerEvent => ({
      time: 238,
      event: 'continuation',
      workerId: 'w2',
      reason: `generation c2 cut on w2 after ${tokens} tokens (connection): continued on w1 (connection)`,
    });
    expect(broken({ ...h, events: [...h.events, event(0)] })).toEqual({});
    expect(broken({ ...h, events: [...h.events, event(3)] })).toEqual({
      'generations restarted from scratch': 1,
    });
  });

  it('also judges the text of a stream that broke another promise (a silent cut)', () => {
    const h = cleanHistory();
    at(h, 2).outcome = 'truncated';
    expect(broken(h)).toEqual({ 'silent truncations': 1 });
    at(h, 2).content = at(h, 2).content!.replace(/ \S+/, '');
    expect(broken(h)).toEqual({
      'silent truncations': 1,
      'content not what the engine produced': 1,
    });
  });

  it('excuses only the requests it is told to', () => {
    const h = cleanHistory();
    at(h, 2).outcome = 'reset';
    expect(judge({ ...h, excused: new Set(['c3']) }).checks['unclean stream ends']).toBe(0);
    expect(judge({ ...h, excused: new Set(['c1']) }).checks['unclean stream ends']).toBe(1);
  });

  it('judges only the attempts inside its window, with the routing state from before it', () => {
    const h = cleanHistory();
    h.journal.push(
      {
        type: 'route',
        time: 400,
        deployment: 'm',
        workerId: 'w1',
        routable: false,
        reason: 'draining: SIGTERM',
      },
      {
        type: 'attempt',
        time: 500,
        requestId: 'late',
        deployment: 'm',
        workerId: 'w1',
        attempt: 2,
      },
    );
    expect(
      judge({ ...h, window: { from: 450, to: 600 } }).checks['attempts to workers out of routing'],
    ).toBe(1);
    expect(
      judge({ ...h, window: { from: 0, to: 450 } }).checks['attempts to workers out of routing'],
    ).toBe(0);
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

describe('the routing journal and the kept history', () => {
  it('parses the journal, skips a line cut by SIGKILL before a restart and rejects garbage', () => {
    const lines = [
      '{"type":"start","time":1,"pid":5}',
      '{"type":"route","time":2,"deployment":"m","workerId":"w1","routable":true,"reason":"ready"}',
      '{"type":"attempt","time":3,"requestId":"r1","deployment":"m","workerId":"w1","att',
      '{"type":"start","time":4,"pid":6}',
    ];
    expect(parseJournal(lines.join('\n')).map((e) => e.type)).toEqual(['start', 'route', 'start']);
    expect(() => parseJournal([lines[2], lines[0]].join('\n').replace('start', 'x'))).toThrow(
      /line 1/,
    );
    expect(() => parseJournal('{"type":"attempt","time":1}\n')).toThrow(/not an entry/);
  });

  it('keeps a run whole, re-judges it to the same figures, and names a figure that differs', () => {
    const h = cleanHistory();
    const window = { from: 0, to: 1_000 };
    const { checks } = judge({ ...h, window });
    const result: FaultResult = {
      fault: 'f',
      requests: summarize(h.requests),
      detectionMs: [],
      checks,
      window,
      run: 'main',
    };
    const file = join(mkdtempSync(join(tmpdir(), 'chaos-record-')), 'h.jsonl.gz');
    writeRunRecord(file, {
      meta: { Commit: 'abc' },
      results: [
        result,
        { ...result, fault: 'tampered', checks: { ...checks, 'hung clients': 1 } },
        // The engines' request logs are kept too: their figures are re-judged as well.
        {
          ...result,
          fault: 'tampered logs',
          checks: { ...checks, 'generations restarted from scratch': 1 },
        },
      ],
      histories: { main: { ...h, capacity: [] } },
    });
    const record = readRunRecord(file);
    expect(record.meta.Commit).toBe('abc');
    expect(record.histories.main?.requests).toHaveLength(3);
    expect(record.histories.main?.engine).toEqual(h.engine);
    const { mismatches } = recheck(record);
    expect(mismatches).toEqual([
      { fault: 'tampered', figure: 'hung clients', recorded: 1, rejudged: 0 },
      {
        fault: 'tampered logs',
        figure: 'generations restarted from scratch',
        recorded: 1,
        rejudged: 0,
      },
    ]);
  });

  it('shows streams cut and generations restarted side by side for the rows that judge them', () => {
    const base = {
      requests: { sent: 1, succeeded: 1, retried: 0, erroredCleanly: 0, lost: 0 },
      detectionMs: [],
    };
    const md = renderReport(
      [
        {
          ...base,
          fault: 'kill',
          checks: { 'streams cut': 0, 'generations restarted from scratch': 2 },
        },
        { ...base, fault: 'restart', checks: { 'generations restarted from scratch': 0 } },
        { ...base, fault: 'other', checks: { 'hung clients': 0 } },
      ],
      {},
    );
    expect(md).toContain('| Fault | streams cut | generations restarted from scratch |');
    expect(md).toContain('| kill | 0 | 2 ✗ |');
    expect(md).toContain('| restart | — | 0 |');
    expect(md).not.toContain('| other | —');
  });

  it('reports capacity that never came back as "never", distinct from "not measured"', () => {
    const base = {
      requests: { sent: 1, succeeded: 1, retried: 0, erroredCleanly: 0, lost: 0 },
      detectionMs: [],
    };
    const md = renderReport(
      [
        { ...base, fault: 'a', checks: { [capacityCheck(90_000)]: 1 } },
        { ...base, fault: 'b', checks: {} },
      ],
      { Commit: 'abc' },
    );
    expect(md).toContain('| a | 1 | 1 | 0 | 0 | 0 | — | — | never ✗ |');
    expect(md).toContain('| b | 1 | 1 | 0 | 0 | 0 | — | — | — |');
    expect(md).toContain('- Verdict: 1 fault(s) broke a promise: a');
  });
});
