/**
 * The raw history of a chaos run, kept next to its report as gzipped JSON lines, and the
 * re-check that judges it again: every figure of the report can be traced to the records it
 * came from, and re-derived by the same checker.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { inWindow, summarize } from './checker.js';
import type { FirstTokenRecord } from '@es/mock-engine';
import type { EngineRequest } from './engine-log.js';
import { ChaosError } from './errors.js';
import type { History } from './history.js';
import { CHECKS, judge } from './judge.js';
import type { FaultResult } from './report.js';

/** One chaos run: its provenance, its results and the histories they were judged from. */
export interface RunRecord {
  /** Commit, date, load, command, profile ... (the report's header). */
  meta: Record<string, string>;
  /** Results without their `history` (histories are kept by name in `histories`). */
  results: FaultResult[];
  /** Histories by run name (`main`, or a scenario that ran its own scheduler). */
  histories: Record<string, History & { maxNodes: number }>;
}

type Line =
  | { kind: 'meta'; meta: Record<string, string> }
  | { kind: 'result'; result: FaultResult }
  | { kind: 'history'; run: string; maxNodes: number; engine?: boolean }
  | { kind: 'request' | 'event' | 'queue' | 'capacity' | 'journal'; run: string; item: unknown }
  | { kind: 'engine-request' | 'first-token'; run: string; item: unknown };

const PARTS = [
  ['request', 'requests'],
  ['event', 'events'],
  ['queue', 'queue'],
  ['capacity', 'capacity'],
  ['journal', 'journal'],
] as const;

/** Write `record` to `path` (gzipped JSON lines, one item per line). */
export function writeRunRecord(path: string, record: RunRecord): void {
  const lines: Line[] = [{ kind: 'meta', meta: record.meta }];
  for (const result of record.results) lines.push({ kind: 'result', result });
  for (const [run, history] of Object.entries(record.histories)) {
    lines.push({
      kind: 'history',
      run,
      maxNodes: history.maxNodes,
      ...(history.engine === undefined ? {} : { engine: true }),
    });
    for (const [kind, key] of PARTS) {
      for (const item of history[key]) lines.push({ kind, run, item });
    }
    for (const item of history.engine?.requests ?? []) {
      lines.push({ kind: 'engine-request', run, item });
    }
    for (const item of history.engine?.firstTokens ?? []) {
      lines.push({ kind: 'first-token', run, item });
    }
  }
  writeFileSync(path, gzipSync(lines.map((l) => JSON.stringify(l)).join('\n') + '\n'));
}

/** Read a run record written by {@link writeRunRecord}. */
export function readRunRecord(path: string): RunRecord {
  const record: RunRecord = { meta: {}, results: [], histories: {} };
  const text = gunzipSync(readFileSync(path)).toString('utf8');
  for (const [i, raw] of text.split('\n').entries()) {
    if (raw === '') continue;
    let line: Line;
    try {
      line = JSON.parse(raw) as Line;
    } catch (error) {
      throw new ChaosError('bad_history', `${path} line ${i + 1} is not JSON`, { cause: error });
    }
    if (line.kind === 'meta') record.meta = line.meta;
    else if (line.kind === 'result') record.results.push(line.result);
    else if (line.kind === 'history') {
      record.histories[line.run] = {
        maxNodes: line.maxNodes,
        requests: [],
        events: [],
        queue: [],
        capacity: [],
        journal: [],
        ...(line.engine === true ? { engine: { requests: [], firstTokens: [] } } : {}),
      };
    } else if (line.kind === 'engine-request' || line.kind === 'first-token') {
      const engine = record.histories[line.run]?.engine;
      if (engine === undefined) {
        throw new ChaosError('bad_history', `${path} line ${i + 1}: ${line.kind} of no engine log`);
      }
      if (line.kind === 'engine-request') engine.requests.push(line.item as EngineRequest);
      else engine.firstTokens.push(line.item as FirstTokenRecord);
    } else {
      const history = record.histories[line.run];
      const key = PARTS.find(([kind]) => kind === line.kind)?.[1];
      if (history === undefined || key === undefined) {
        throw new ChaosError('bad_history', `${path} line ${i + 1}: unknown ${line.kind} line`);
      }
      (history[key] as unknown[]).push(line.item);
    }
  }
  return record;
}

/** Judge one recorded result's window of its history again. */
export function rejudge(record: RunRecord, result: FaultResult): FaultResult | undefined {
  const history = record.histories[result.run ?? 'main'];
  if (history === undefined || result.window === undefined) return undefined;
  const { from, to } = result.window;
  const excused = new Set(result.excused ?? []);
  const requests = inWindow(history.requests, from, to).filter((r) => !excused.has(r.id));
  const { checks } = judge({
    requests,
    journal: history.journal,
    events: history.events,
    queue: history.queue.filter((q) => q.time >= from && q.time < to),
    maxNodes: history.maxNodes,
    window: { from, to },
    ...(history.engine === undefined ? {} : { engine: history.engine }),
  });
  return { ...result, requests: summarize(requests), checks: { ...result.checks, ...checks } };
}

/** A figure of a recorded result that judging its history again does not reproduce. */
export interface RecheckMismatch {
  fault: string;
  figure: string;
  recorded: number;
  rejudged: number;
}

/**
 * Judge every result of a run record again from its history; returns the re-judged results
 * and every figure that differs from the recorded one (there must be none).
 * @example
 * const { mismatches } = recheck(readRunRecord('reports/reliability-history.jsonl.gz'));
 */
export function recheck(record: RunRecord): {
  results: FaultResult[];
  mismatches: RecheckMismatch[];
  notJudged: string[];
} {
  const results: FaultResult[] = [];
  const mismatches: RecheckMismatch[] = [];
  const notJudged: string[] = [];
  for (const result of record.results) {
    const again = rejudge(record, result);
    if (again === undefined) {
      notJudged.push(result.fault);
      results.push(result);
      continue;
    }
    results.push(again);
    const figures: [string, number, number][] = [
      ...CHECKS.map((c): [string, number, number] => [
        c,
        result.checks[c] ?? 0,
        again.checks[c] ?? 0,
      ]),
      ...(Object.keys(result.requests) as (keyof FaultResult['requests'])[]).map(
        (k): [string, number, number] => [`requests ${k}`, result.requests[k], again.requests[k]],
      ),
    ];
    for (const [figure, recorded, rejudged] of figures) {
      if (recorded !== rejudged)
        mismatches.push({ fault: result.fault, figure, recorded, rejudged });
    }
  }
  return { results, mismatches, notJudged };
}
