/**
 * Checks of the separate data plane (issue 17): drains and removals reach every process that
 * routes, serving shows no gap while the scheduler is away, and a data-plane process that
 * dies takes only its own requests with it. Pure functions over the recorded history.
 */
import { journalProcesses } from './checker.js';
import type { JournalEntry, RequestRecord } from './history.js';

/**
 * How long a drain or removal may take to reach every data-plane process (ms): the watch
 * stream's promise ("a worker drained through the scheduler leaves every table within a
 * second").
 */
export const REMOVAL_PROPAGATION_MS = 1_000;

/** The reasons a worker leaves routing everywhere (the control plane's), not one process's. */
const GLOBAL_REMOVAL = /^(draining|gone|failed|forgotten)\b/;

/** A process learns a drain from the worker itself: its engine front refuses new requests. */
const REFUSED = /^draining: its engine front refuses/;

/** An attempt to a worker after a drain or removal of it had taken effect. */
export interface RemovalViolation {
  attempt: Extract<JournalEntry, { type: 'attempt' }>;
  /** The process that sent it. */
  pid: number | undefined;
  /** When the drain or removal first showed in any process's journal, and why. */
  removedAt: number;
  reason: string;
}

/**
 * Drains and removals are global: once a worker has left routing for a control-plane reason
 * (draining, failed, gone, forgotten) in any process's journal, no process may send it a new
 * attempt later than {@link REMOVAL_PROPAGATION_MS} after that, whatever its own table says
 * (a process cut off from the scheduler never hears of the drain from the stream). The one
 * attempt that teaches a process of the drain is allowed: the draining worker refuses it
 * (503 before any byte) and the process drops the worker at once, which its journal shows as
 * the worker leaving with `draining: its engine front refuses ...` before its next attempt
 * there. Attempts a process sent after dropping the worker itself are
 * {@link checkRouting}'s (not counted twice here). A worker that enters routing again in a
 * process that had dropped it for such a reason (the control plane re-admits it) is no longer
 * removed.
 */
export function checkGlobalRemovals(journal: readonly JournalEntry[]): RemovalViolation[] {
  // Several processes append to one journal, each in its own order: judge in time order.
  const lines = journalProcesses(journal)
    .map((line, index) => ({ ...line, index }))
    .sort((a, b) => a.entry.time - b.entry.time || a.index - b.index);
  const removed = new Map<string, { time: number; pid: number | undefined; reason: string }>();
  /** `pid\0worker` of processes that dropped the worker themselves. */
  const dropped = new Set<string>();
  /** Attempts still suspect, per `pid\0worker` (the last may be forgiven as the refused one). */
  const suspects = new Map<string, RemovalViolation[]>();
  const key = (pid: number | undefined, worker: string) => `${pid ?? ''}\u0000${worker}`;
  for (const { entry: e, pid } of lines) {
    if (e.type === 'start') {
      for (const k of [...dropped]) if (k.startsWith(`${pid}\u0000`)) dropped.delete(k);
      continue;
    }
    const k = key(pid, e.workerId);
    if (e.type === 'route') {
      if (e.routable) {
        // A process that had dropped it for a control-plane reason takes it back: the control
        // plane routes it again.
        if (dropped.delete(k)) removed.delete(e.workerId);
        continue;
      }
      if (!GLOBAL_REMOVAL.test(e.reason)) continue;
      if (!removed.has(e.workerId))
        removed.set(e.workerId, { time: e.time, pid, reason: e.reason });
      if (REFUSED.test(e.reason) && !dropped.has(k)) suspects.get(k)?.pop();
      dropped.add(k);
      continue;
    }
    const removal = removed.get(e.workerId);
    if (removal === undefined || dropped.has(k)) continue;
    if (e.time <= removal.time + REMOVAL_PROPAGATION_MS) continue;
    const list = suspects.get(k) ?? [];
    list.push({ attempt: e, pid, removedAt: removal.time, reason: removal.reason });
    suspects.set(k, list);
  }
  return [...suspects.values()].flat().sort((a, b) => a.attempt.time - b.attempt.time);
}

/** A stretch with no successful response. */
export interface Gap {
  from: number;
  to: number;
  ms: number;
}

/**
 * The stretches of `[from, to]` longer than `maxMs` in which no successful request made
 * progress: the times that count are the first byte and the end of every request that
 * succeeded. With the load's 8 clients a healthy system shows one every ~100 ms.
 * @example
 * const gaps = successGaps(requests, faultAt, end, 1_000); // must be []
 */
export function successGaps(
  requests: readonly RequestRecord[],
  from: number,
  to: number,
  maxMs: number,
): Gap[] {
  const times = [from, to];
  for (const r of requests) {
    if (r.outcome !== 'ok') continue;
    for (const t of [r.firstByte, r.end]) {
      if (t !== undefined && t > from && t < to) times.push(t);
    }
  }
  times.sort((a, b) => a - b);
  const gaps: Gap[] = [];
  for (let i = 1; i < times.length; i++) {
    const ms = times[i]! - times[i - 1]!;
    if (ms > maxMs) gaps.push({ from: times[i - 1]!, to: times[i]!, ms });
  }
  return gaps;
}

/** The longest gap's length in ms (0 when none), for notes. */
export function longestGap(requests: readonly RequestRecord[], from: number, to: number): number {
  return Math.max(0, ...successGaps(requests, from, to, 0).map((g) => g.ms));
}

/** The processes whose journal shows an attempt of each request, by request id. */
export function routedBy(journal: readonly JournalEntry[]): Map<string, Set<number>> {
  const by = new Map<string, Set<number>>();
  for (const { entry, pid } of journalProcesses(journal)) {
    if (entry.type !== 'attempt' || pid === undefined) continue;
    const pids = by.get(entry.requestId) ?? new Set<number>();
    pids.add(pid);
    by.set(entry.requestId, pids);
  }
  return by;
}

/** What a data-plane process's death did to the requests of its window. */
export interface ProcessKillOutcome {
  /** Requests in flight at the kill that the killed process carried (any outcome). */
  carried: RequestRecord[];
  /** Of those, the ones that failed: the kill's cost, counted and excused. */
  failedCarried: RequestRecord[];
  /** Failed requests the killed process did not carry: each one is a broken promise. */
  failedOthers: RequestRecord[];
}

/**
 * Splits the failures of a window around the SIGKILL of data-plane process `pid` at `killAt`:
 * a request was carried by it when it was in flight at the kill and its journaled attempts
 * came from that process, or when no process journaled an attempt of it (the dead process had
 * read it and not routed it yet; a live process journals every attempt).
 */
export function splitByKilledProcess(
  requests: readonly RequestRecord[],
  journal: readonly JournalEntry[],
  pid: number,
  killAt: number,
): ProcessKillOutcome {
  const by = routedBy(journal);
  const carried: RequestRecord[] = [];
  const failedCarried: RequestRecord[] = [];
  const failedOthers: RequestRecord[] = [];
  for (const r of requests) {
    const pids = by.get(r.id);
    const inFlight = r.start <= killAt && r.end >= killAt;
    const mine = inFlight && (pids === undefined ? r.outcome !== 'ok' : pids.has(pid));
    if (mine) carried.push(r);
    if (r.outcome === 'ok') continue;
    (mine ? failedCarried : failedOthers).push(r);
  }
  return { carried, failedCarried, failedOthers };
}
