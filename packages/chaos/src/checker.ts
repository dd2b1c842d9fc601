/**
 * The checker: pure functions over a recorded history that state whether the system kept
 * its promises. Each returns the offending records, so a failure names them.
 */
import type { CapacitySample, QueueSample, RequestRecord, SchedulerEvent } from './history.js';

/** Counts of one window of requests, as the report shows them. */
export interface RequestSummary {
  sent: number;
  succeeded: number;
  /** Succeeded after more than one HTTP attempt by the client. */
  retried: number;
  /** Failed the clean way: a stream that ended with an error event, or a 4xx answer. */
  erroredCleanly: number;
  /** Everything else: non-streaming failures, silent truncations, resets, hung requests. */
  lost: number;
}

/**
 * Requests a fault at `from` could touch: those still running at `from` (in flight when it
 * struck) and those started before `to`.
 */
export function inWindow(
  requests: readonly RequestRecord[],
  from: number,
  to: number,
): RequestRecord[] {
  return requests.filter((r) => r.end >= from && r.start < to);
}

function isClean(r: RequestRecord): boolean {
  if (r.outcome === 'error-event') return r.stream;
  return r.outcome === 'error-status' && r.status !== undefined && r.status < 500;
}

/**
 * Summarise requests: sent, succeeded, retried, errored cleanly, lost.
 * @example
 * const { lost } = summarize(history.requests); // must be 0
 */
export function summarize(requests: readonly RequestRecord[]): RequestSummary {
  let succeeded = 0;
  let retried = 0;
  let erroredCleanly = 0;
  let lost = 0;
  for (const r of requests) {
    if (r.outcome === 'ok') {
      succeeded++;
      if (r.attempts > 1) retried++;
    } else if (isClean(r)) erroredCleanly++;
    else lost++;
  }
  return { sent: requests.length, succeeded, retried, erroredCleanly, lost };
}

/** Violations of the request promises. */
export interface RequestViolations {
  /** Non-streaming requests that did not succeed (a dead worker must be retried elsewhere). */
  lostNonStreaming: RequestRecord[];
  /** Streams (or bodies) that ended without a finish reason and without an error event. */
  silentTruncations: RequestRecord[];
  /** Requests with no progress beyond the hang timeout. */
  hung: RequestRecord[];
  /** Streams that failed with anything but an error event (a reset, or a status or connection error after the first byte). */
  uncleanStreams: RequestRecord[];
}

/** Check that non-streaming requests all succeeded and streams either finished or ended with an error event. */
export function checkRequests(requests: readonly RequestRecord[]): RequestViolations {
  const out: RequestViolations = {
    lostNonStreaming: [],
    silentTruncations: [],
    hung: [],
    uncleanStreams: [],
  };
  for (const r of requests) {
    if (r.outcome === 'hung') out.hung.push(r);
    else if (r.outcome === 'truncated') out.silentTruncations.push(r);
    else if (!r.stream && r.outcome !== 'ok') out.lostNonStreaming.push(r);
    else if (r.stream && r.outcome !== 'ok' && r.outcome !== 'error-event') {
      // A stream refused before its first byte may fail with a status, like a non-streaming request.
      if (r.firstByte !== undefined || r.outcome === 'connection-error') out.uncleanStreams.push(r);
      else if (!isClean(r)) out.uncleanStreams.push(r);
    }
  }
  return out;
}

/** A request sent to a worker after that worker's drain notice. */
export interface DrainViolation {
  request: RequestRecord;
  drainAt: number;
}

/**
 * Requests that started more than `toleranceMs` after a worker's `draining` (or `gone`)
 * event and were still answered by that worker, unless the worker was `ready` again in
 * between (it registered anew after a scheduler restart or a heartbeat timeout). Needs the
 * proxy's worker header; records without a worker are not judged here, see
 * {@link unattributed}.
 */
export function checkDrainRouting(
  requests: readonly RequestRecord[],
  events: readonly SchedulerEvent[],
  toleranceMs = 50,
): DrainViolation[] {
  // Per worker, its drain/gone and ready events in time order.
  const timeline = new Map<string, { time: number; out: boolean }[]>();
  for (const e of events) {
    if (e.workerId === undefined) continue;
    const out = e.event === 'draining' || e.event === 'gone';
    if (!out && e.event !== 'ready') continue;
    let list = timeline.get(e.workerId);
    if (list === undefined) timeline.set(e.workerId, (list = []));
    list.push({ time: e.time, out });
  }
  for (const list of timeline.values()) list.sort((a, b) => a.time - b.time);
  const violations: DrainViolation[] = [];
  for (const r of requests) {
    if (r.worker === undefined) continue;
    // The last drain/ready change before the request started (less the tolerance).
    let drainAt: number | undefined;
    for (const change of timeline.get(r.worker) ?? []) {
      if (change.time + toleranceMs >= r.start) break;
      drainAt = change.out ? (drainAt ?? change.time) : undefined;
    }
    if (drainAt !== undefined) violations.push({ request: r, drainAt });
  }
  return violations;
}

/** Requests that reached a worker (had a first byte) but carry no worker id. */
export function unattributed(requests: readonly RequestRecord[]): RequestRecord[] {
  return requests.filter(
    (r) =>
      r.firstByte !== undefined &&
      r.status !== undefined &&
      r.status < 300 &&
      r.worker === undefined,
  );
}

/** The largest number of live jobs in any squeue sample, and that sample. */
export function maxLiveJobs(queue: readonly QueueSample[]): { max: number; sample?: QueueSample } {
  let max = 0;
  let sample: QueueSample | undefined;
  for (const q of queue) {
    const live = Object.values(q.jobs).filter((state) => !TERMINAL.has(state)).length;
    if (live > max) {
      max = live;
      sample = q;
    }
  }
  return sample === undefined ? { max } : { max, sample };
}

const TERMINAL = new Set([
  'COMPLETED',
  'CANCELLED',
  'FAILED',
  'TIMEOUT',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
  'BOOT_FAIL',
  'DEADLINE',
  'PREEMPTED',
]);

/** Every distinct job id seen live across the samples. */
export function jobsSeen(queue: readonly QueueSample[]): string[] {
  const ids = new Set<string>();
  for (const q of queue) {
    for (const [id, state] of Object.entries(q.jobs)) if (!TERMINAL.has(state)) ids.add(id);
  }
  return [...ids].sort();
}

/**
 * Submissions by a restarted scheduler beyond what was missing: after `restartAt`, the
 * `submitted` events minus (`maxNodes` − jobs it `adopted`), never negative. 0 means the
 * restart submitted nothing twice.
 */
export function duplicateSubmissions(
  events: readonly SchedulerEvent[],
  restartAt: number,
  maxNodes: number,
  until = Number.POSITIVE_INFINITY,
): { adopted: number; submitted: number; duplicates: number } {
  const after = events.filter((e) => e.time >= restartAt && e.time < until);
  const adopted = new Set(after.filter((e) => e.event === 'adopted').map((e) => e.jobId)).size;
  // A job that really ended after the restart is replaced legitimately.
  const ended = after.filter(
    (e) => e.event === 'cancelled' || e.event === 'preempted' || e.event === 'failed',
  ).length;
  const submitted = after.filter((e) => e.event === 'submitted').length;
  return {
    adopted,
    submitted,
    duplicates: Math.max(0, submitted - Math.max(0, maxNodes - adopted) - ended),
  };
}

/**
 * Time from `faultAt` to the first scheduler event that `matches`, in ms; undefined when none.
 */
export function detectionTime(
  events: readonly SchedulerEvent[],
  faultAt: number,
  matches: (event: SchedulerEvent) => boolean,
): number | undefined {
  for (const e of events) if (e.time >= faultAt && matches(e)) return e.time - faultAt;
  return undefined;
}

/**
 * Time from `faultAt` until ready capacity is back at `target` after the dip the fault
 * caused: 0 when it never dipped, undefined when it never came back.
 */
export function timeToCapacity(
  capacity: readonly CapacitySample[],
  faultAt: number,
  target: number,
): number | undefined {
  const after = capacity.filter((s) => s.time >= faultAt).sort((a, b) => a.time - b.time);
  const dip = after.findIndex((s) => s.ready < target);
  if (dip === -1) return 0;
  const back = after.slice(dip).find((s) => s.ready >= target);
  return back === undefined ? undefined : back.time - faultAt;
}

/** Median of numbers (undefined for none). */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}
