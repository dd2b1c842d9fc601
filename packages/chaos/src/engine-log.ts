/**
 * What the engines saw: the mock engines' request logs (`--request-log-dir`), read back, and
 * the scheduler's `continuation` events, parsed. Pure functions over them judge whether a
 * generation was continued or restarted from scratch, and which cuts the proxy refused.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FirstTokenRecord, RequestLogRecord } from '@es/mock-engine';
import type { RequestRecord, SchedulerEvent } from './history.js';

/** One inference request an engine received, with the pid of that engine process. */
export type EngineRequest = RequestLogRecord & { pid: number };

/** Every engine's request log of one run. */
export interface EngineLog {
  requests: EngineRequest[];
  firstTokens: FirstTokenRecord[];
}

/** JSON lines; a last line cut by a SIGKILL is skipped, as are blank lines. */
function jsonLines<T>(text: string): T[] {
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // Only a line the kernel never finished can be cut; nothing after it was written.
    }
  }
  return out;
}

/**
 * Reads every `requests-<pid>.jsonl` and `first-tokens-<pid>.jsonl` in `dir` (empty when the
 * directory does not exist: no engine received anything).
 */
export function readEngineLog(dir: string): EngineLog {
  const log: EngineLog = { requests: [], firstTokens: [] };
  if (!existsSync(dir)) return log;
  for (const name of readdirSync(dir).sort()) {
    const request = /^requests-(\d+)\.jsonl$/.exec(name);
    const text = () => readFileSync(join(dir, name), 'utf8');
    if (request !== null) {
      const pid = Number(request[1]);
      for (const r of jsonLines<RequestLogRecord>(text())) log.requests.push({ ...r, pid });
    } else if (/^first-tokens-\d+\.jsonl$/.test(name)) {
      log.firstTokens.push(...jsonLines<FirstTokenRecord>(text()));
    }
  }
  log.requests.sort((a, b) => a.at - b.at);
  log.firstTokens.sort((a, b) => a.at - b.at);
  return log;
}

/** A generation an engine was asked for again from its original prompt after tokens went out. */
export interface Restart {
  requestId: string;
  /** The request an engine received again. */
  again: EngineRequest;
  /** The first token already sent for the same prompt, before `again` arrived. */
  after: FirstTokenRecord;
}

/**
 * Generations restarted from scratch: an engine request with the same request id and the
 * same number of prompt tokens as an earlier one for which an engine had already sent a
 * first token, and that generated again (a first token of its own). A continuation carries
 * the prompt plus the generated tokens (longer); a retry of a request that never got a token
 * has no first token before it. The path is not compared: the proxy continues a chat on
 * `/v1/completions` over the chat's own prompt ids, so a chat restarted by a continuation
 * shows there with the chat's prompt length. A request line without a first token of its own
 * is not a restart: an engine thawed after a SIGSTOP reads, and logs then, requests the proxy
 * sent it long before and has since given up (their connection closed, nothing generated).
 * `ids` limits the search to those requests.
 */
export function restartsFromScratch(log: EngineLog, ids?: ReadonlySet<string>): Restart[] {
  const key = (id: string, promptTokens: number) => `${id}\u0000${promptTokens}`;
  const firsts = new Map<string, FirstTokenRecord[]>();
  for (const f of log.firstTokens) {
    if (f.requestId === null || (ids !== undefined && !ids.has(f.requestId))) continue;
    const k = key(f.requestId, f.promptTokens);
    firsts.set(k, [...(firsts.get(k) ?? []), f]);
  }
  const out: Restart[] = [];
  for (const r of log.requests) {
    if (r.requestId === null) continue;
    // A request's own first token comes a TTFT after it arrives; one in the same millisecond
    // on another engine came first only if it belongs to an earlier request.
    const same = firsts.get(key(r.requestId, r.promptTokens)) ?? [];
    const after = same.find((f) => f.at < r.at || (f.at === r.at && f.pid !== r.pid));
    const generated = same.some((f) => f.pid === r.pid && f.at >= r.at && f !== after);
    if (after !== undefined && generated) out.push({ requestId: r.requestId, again: r, after });
  }
  return out;
}

/**
 * Answers the engine logs cannot account for: a request that succeeded must have reached an
 * engine (a request line with its id) and had a first token sent (a first-token line), or
 * the restart check would pass over logs that stopped being written.
 */
export function missingFromEngineLog(
  requests: readonly RequestRecord[],
  log: EngineLog,
): RequestRecord[] {
  const received = new Set(log.requests.map((r) => r.requestId));
  const started = new Set(log.firstTokens.map((f) => f.requestId));
  return requests.filter((r) => r.outcome === 'ok' && (!received.has(r.id) || !started.has(r.id)));
}

/** One continuation decision of the proxy, from the scheduler's `continuation` event. */
export interface Continuation {
  time: number;
  requestId: string;
  fromWorker: string;
  generatedTokens: number;
  cause: string;
  outcome: 'continued' | 'inexact' | 'refused' | 'failed';
  toWorker?: string;
  reason: string;
}

const CONTINUATION =
  /^generation (\S+) cut on (\S+) after (\d+) tokens \((.*?)\): (continued|inexact|refused|failed)(?: on (\S+))? \((.*)\)$/;

/**
 * The continuation decisions among scheduler events (`reason` reads `generation <requestId>
 * cut on <worker> after <n> tokens (<cause>): <outcome>[ on <worker>] (<reason>)`).
 */
export function continuations(events: readonly SchedulerEvent[]): Continuation[] {
  const out: Continuation[] = [];
  for (const e of events) {
    if (e.event !== 'continuation' || e.reason === undefined) continue;
    const m = CONTINUATION.exec(e.reason);
    if (m === null) continue;
    const c: Continuation = {
      time: e.time,
      requestId: m[1] ?? '',
      fromWorker: m[2] ?? '',
      generatedTokens: Number(m[3]),
      cause: m[4] ?? '',
      outcome: m[5] as Continuation['outcome'],
      reason: m[7] ?? '',
    };
    if (m[6] !== undefined) c.toWorker = m[6];
    out.push(c);
  }
  return out;
}

/** The streams a fault cut, and the proxy's refusals among `requests`, by reason. */
export interface StreamCuts {
  /** Streams that ended with an error event, a reset or a silent truncation, and were not refused. */
  cut: RequestRecord[];
  /** Refused request ids by the proxy's reason. */
  refused: Record<string, string[]>;
}

const CUT = new Set(['error-event', 'reset', 'truncated']);

/**
 * Streams cut: every stream of `requests` that ended with an error event, a reset or a silent
 * truncation, except those whose cut the proxy refused to continue (a refusal is the documented end for a request it cannot
 * continue: n > 1, structured output, ...). Refusals are read from the `continuation` events.
 */
export function streamCuts(
  requests: readonly RequestRecord[],
  events: readonly SchedulerEvent[],
): StreamCuts {
  const ids = new Set(requests.map((r) => r.id));
  const refused: Record<string, string[]> = {};
  const refusedIds = new Set<string>();
  for (const c of continuations(events)) {
    if (c.outcome !== 'refused' || !ids.has(c.requestId)) continue;
    (refused[c.reason] ??= []).push(c.requestId);
    refusedIds.add(c.requestId);
  }
  const cut = requests.filter((r) => r.stream && CUT.has(r.outcome) && !refusedIds.has(r.id));
  return { cut, refused };
}
