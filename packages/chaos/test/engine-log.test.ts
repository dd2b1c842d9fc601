import { appendFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FirstTokenRecord } from '@es/mock-engine';
import {
  continuations,
  continuityChecks,
  judge,
  missingFromEngineLog,
  readEngineLog,
  restartsFromScratch,
  streamCuts,
  type EngineLog,
  type EngineRequest,
  type RequestRecord,
  type SchedulerEvent,
} from '../src/index.js';

const request = (at: number, fields: Partial<EngineRequest> = {}): EngineRequest => ({
  at,
  path: '/v1/chat/completions',
  requestId: 'g1',
  promptTokens: 30,
  maxTokens: 80,
  stream: true,
  returnTokenIds: true,
  pid: 100,
  ...fields,
});
const first = (at: number, fields: Partial<FirstTokenRecord> = {}): FirstTokenRecord => ({
  at,
  event: 'first-token',
  requestId: 'g1',
  path: '/v1/chat/completions',
  promptTokens: 30,
  pid: 100,
  ...fields,
});

const record = (fields: Partial<RequestRecord>): RequestRecord => ({
  id: 'g1',
  stream: true,
  start: 0,
  end: 10,
  bytes: 5,
  outcome: 'ok',
  attempts: 1,
  firstByte: 1,
  ...fields,
});

const continuation = (
  requestId: string,
  outcome: string,
  reason: string,
  to = ' on 7.0.1',
): SchedulerEvent => ({
  time: 5,
  event: 'continuation',
  workerId: '7.0.0',
  reason: `generation ${requestId} cut on 7.0.0 after 12 tokens (engine_dead): ${outcome}${to} (${reason})`,
});

describe('restarts from scratch, judged from the engines request logs', () => {
  it('a continuation (prompt + generated) is not a restart; the same prompt after a first token is', () => {
    const continued: EngineLog = {
      requests: [request(0), request(300, { path: '/v1/completions', promptTokens: 42, pid: 101 })],
      firstTokens: [first(50), first(350, { path: '/v1/completions', promptTokens: 42 })],
    };
    expect(restartsFromScratch(continued)).toEqual([]);
    // The proxy continued from the prompt alone: a chat comes back on /v1/completions with
    // the chat's own prompt length.
    const again = request(300, { path: '/v1/completions', pid: 101 });
    const restarted: EngineLog = {
      requests: [request(0), again],
      firstTokens: [first(50), first(350, { path: '/v1/completions', pid: 101 })],
    };
    expect(restartsFromScratch(restarted)).toEqual([{ requestId: 'g1', again, after: first(50) }]);
    // Limited to the ids asked about.
    expect(restartsFromScratch(restarted, new Set(['other']))).toEqual([]);
  });

  it('a request an engine read only after a SIGSTOP, long given up by the proxy, is not a restart', () => {
    // Sent to the frozen engine first, moved by the proxy and started elsewhere; the thawed
    // engine logs the stale request 8 s later and never generates for it.
    const log: EngineLog = {
      requests: [request(0, { pid: 101 }), request(8_050, { pid: 100 })],
      firstTokens: [first(50, { pid: 101 })],
    };
    expect(restartsFromScratch(log)).toEqual([]);
  });

  it('a retry of a request that never got a token is not a restart', () => {
    const log: EngineLog = {
      requests: [request(0), request(200, { pid: 101 })],
      firstTokens: [first(260, { pid: 101 })],
    };
    expect(restartsFromScratch(log)).toEqual([]);
  });

  it('reads every engine process file, skips a line cut by a SIGKILL, and numbers the pid', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'chaos-engine-log-')), 'engine-requests');
    expect(readEngineLog(dir)).toEqual({ requests: [], firstTokens: [] });
    mkdirSync(dir);
    const { pid: _pid, ...line } = request(20);
    appendFileSync(join(dir, 'requests-7.jsonl'), `${JSON.stringify(line)}\n{"at":`);
    appendFileSync(join(dir, 'requests-8.jsonl'), `${JSON.stringify({ ...line, at: 10 })}\n`);
    appendFileSync(join(dir, 'first-tokens-8.jsonl'), `${JSON.stringify(first(60, { pid: 8 }))}\n`);
    appendFileSync(join(dir, 'unrelated.txt'), 'x');
    const log = readEngineLog(dir);
    expect(log.requests).toEqual([request(10, { pid: 8 }), request(20, { pid: 7 })]);
    expect(log.firstTokens).toEqual([first(60, { pid: 8 })]);
  });

  it('counts answers the logs do not account for (no request line, or no first token)', () => {
    const log: EngineLog = {
      requests: [request(0), request(0, { requestId: 'g2' })],
      firstTokens: [first(50)],
    };
    const answers = [record({}), record({ id: 'g2' }), record({ id: 'g3' })];
    expect(missingFromEngineLog(answers, log).map((r) => r.id)).toEqual(['g2', 'g3']);
    // A request that failed is not expected to have reached an engine.
    expect(missingFromEngineLog([record({ id: 'g3', outcome: 'error-status' })], log)).toEqual([]);
  });
});

describe('continuation events and streams cut', () => {
  it('parses every outcome, with and without a target worker, and skips other events', () => {
    const events: SchedulerEvent[] = [
      continuation('a', 'continued', 'engine_dead'),
      continuation('b', 'refused', 'n', ''),
      continuation('c', 'failed', 'max-continuations', ''),
      { time: 1, event: 'continuation', reason: 'something else' },
      { time: 1, event: 'gone', workerId: '7.0.0' },
    ];
    expect(continuations(events)).toEqual([
      {
        time: 5,
        requestId: 'a',
        fromWorker: '7.0.0',
        generatedTokens: 12,
        cause: 'engine_dead',
        outcome: 'continued',
        toWorker: '7.0.1',
        reason: 'engine_dead',
      },
      {
        time: 5,
        requestId: 'b',
        fromWorker: '7.0.0',
        generatedTokens: 12,
        cause: 'engine_dead',
        outcome: 'refused',
        reason: 'n',
      },
      {
        time: 5,
        requestId: 'c',
        fromWorker: '7.0.0',
        generatedTokens: 12,
        cause: 'engine_dead',
        outcome: 'failed',
        reason: 'max-continuations',
      },
    ]);
  });

  it('counts every stream cut but the refused ones, which it lists by reason', () => {
    const requests = [
      record({ id: 'ok' }),
      record({ id: 'cut', outcome: 'error-event' }),
      record({ id: 'reset', outcome: 'reset' }),
      record({ id: 'refused', outcome: 'error-event' }),
      record({ id: 'non-stream', stream: false, outcome: 'error-status' }),
    ];
    const events = [
      continuation('refused', 'refused', 'structured_output', ''),
      continuation('cut', 'failed', 'retry-budget', ''),
      continuation('elsewhere', 'refused', 'n', ''),
    ];
    const { cut, refused } = streamCuts(requests, events);
    expect(cut.map((r) => r.id)).toEqual(['cut', 'reset']);
    expect(refused).toEqual({ structured_output: ['refused'] });
    const notes: string[] = [];
    expect(continuityChecks(requests, events, notes)).toEqual({ 'streams cut': 2 });
    expect(notes[0]).toBe(
      'continuation decisions for these requests: refused 1, failed 1; refusals (an error event by design, not counted as cut): structured_output 1 (refused)',
    );
    expect(notes[1]).toMatch(/^streams cut: cut \(error-event\); reset \(reset\)/);
  });
});

describe('judge with the engines request logs', () => {
  const answer = record({ prompt: undefined });
  const base = { journal: [], events: [], queue: [], maxNodes: 1 };

  it('adds the restart and missing-log checks only when it has the logs', () => {
    expect(Object.keys(judge({ ...base, requests: [answer] }).checks)).not.toContain(
      'generations restarted from scratch',
    );
    const restarted: EngineLog = {
      requests: [request(0), request(300, { path: '/v1/completions' })],
      firstTokens: [first(50), first(350, { path: '/v1/completions' })],
    };
    const { checks, offenders } = judge({ ...base, requests: [answer], engine: restarted });
    expect(checks['generations restarted from scratch']).toBe(1);
    expect(checks['answers missing from the engine request logs']).toBe(0);
    expect(offenders['generations restarted from scratch']?.[0]).toMatch(
      /^g1: \/v1\/completions with its 30 prompt tokens again on engine pid 100 .* 250 ms after engine pid 100 sent its first token$/,
    );
    // A client that sent the request again itself (its own retry) restarted it, not the system.
    const retried = judge({ ...base, requests: [{ ...answer, attempts: 2 }], engine: restarted });
    expect(retried.checks['generations restarted from scratch']).toBe(0);
    const empty = judge({ ...base, requests: [answer], engine: { requests: [], firstTokens: [] } });
    expect(empty.checks['answers missing from the engine request logs']).toBe(1);
    // An excused request is not judged.
    const excused = judge({
      ...base,
      requests: [answer],
      engine: restarted,
      excused: new Set(['g1']),
    });
    expect(excused.checks['generations restarted from scratch']).toBe(0);
  });
});
