/**
 * The checker: pure functions over a recorded history that state whether the system kept
 * its promises. Each returns the offending records, so a failure names them.
 */
import type {
  CapacitySample,
  JournalEntry,
  QueueSample,
  RequestRecord,
  SchedulerEvent,
} from './history.js';

/** Counts of one window of requests, as the report shows them. */
export interface RequestSummary {
  sent: number;
  succeeded: number;
  /** Succeeded after more than one HTTP attempt by the client. */
  retried: number;
  /** Failed the clean way: a stream that ended with an error event. */
  erroredCleanly: number;
  /**
   * Everything else: non-streaming failures, 4xx answers (the load sends only valid
   * requests), silent truncations, resets, hung requests.
   */
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

/** The one clean way to fail: a stream that ends with an SSE error event. */
function isClean(r: RequestRecord): boolean {
  return r.outcome === 'error-event' && r.stream;
}

/** A 4xx answer: the load sends only valid requests, so it is a broken promise. */
function isClientError(r: RequestRecord): boolean {
  return (
    r.outcome === 'error-status' && r.status !== undefined && r.status >= 400 && r.status < 500
  );
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
  /** 4xx answers to the load's requests, which are all valid. */
  clientErrors: RequestRecord[];
}

/** Check that non-streaming requests all succeeded and streams either finished or ended with an error event. */
export function checkRequests(requests: readonly RequestRecord[]): RequestViolations {
  const out: RequestViolations = {
    lostNonStreaming: [],
    silentTruncations: [],
    hung: [],
    uncleanStreams: [],
    clientErrors: [],
  };
  for (const r of requests) {
    if (r.outcome === 'hung') out.hung.push(r);
    else if (r.outcome === 'truncated') out.silentTruncations.push(r);
    else if (isClientError(r)) out.clientErrors.push(r);
    else if (!r.stream && r.outcome !== 'ok') out.lostNonStreaming.push(r);
    else if (r.stream && r.outcome !== 'ok' && r.outcome !== 'error-event') {
      out.uncleanStreams.push(r);
    }
  }
  return out;
}

/** A request whose content differs from what the engine deterministically produces. */
export interface ContentViolation {
  request: RequestRecord;
  /** What the engine must have produced (`undefined`: the record lacks what is needed to know). */
  expected: string | undefined;
  why: 'missing' | 'differs' | 'not a prefix';
}

/**
 * Content checks: a request that succeeded must carry exactly the expected text; a stream
 * that ended any other way (an error event, or a broken promise: truncated, reset, hung)
 * must carry a prefix of it (nothing dropped, duplicated or invented before the cut).
 * Records of a success or of a stream cut with an error event that lack the prompt or the
 * content are violations too: a recorder that stops filling them must not pass. Failed
 * non-streaming requests are not judged here (their failure is, by {@link checkRequests}).
 */
export function checkContent(
  requests: readonly RequestRecord[],
  expected: (request: RequestRecord) => string | undefined,
): ContentViolation[] {
  const out: ContentViolation[] = [];
  for (const r of requests) {
    const mustHave = r.outcome === 'ok' || (r.outcome === 'error-event' && r.stream);
    if (!mustHave && !(r.stream && r.content !== undefined)) continue;
    const want = r.prompt === undefined ? undefined : expected(r);
    if (want === undefined || r.content === undefined) {
      out.push({ request: r, expected: want, why: 'missing' });
    } else if (r.outcome === 'ok' ? r.content !== want : !want.startsWith(r.content)) {
      out.push({
        request: r,
        expected: want,
        why: r.outcome === 'ok' ? 'differs' : 'not a prefix',
      });
    }
  }
  return out;
}

/** An upstream attempt a process sent to a worker that was not in its routable set. */
export interface RoutingViolation {
  attempt: Extract<JournalEntry, { type: 'attempt' }>;
  /** The process that sent it (undefined: a journal of one process without pids). */
  pid?: number;
  /** When the worker left that process's routing (undefined: it never entered it there). */
  leftAt?: number;
  reason: string;
}

/** The routable set of one process, as its journal lines tell it. */
interface ProcessRouting {
  routable: Set<string>;
  left: Map<string, { time: number; reason: string }>;
}

/**
 * The process a journal line belongs to: its `pid`, else the process of the last `start` line
 * (a journal written by one process at a time names no pid on its entries).
 */
export function journalProcesses(
  journal: readonly JournalEntry[],
): { entry: JournalEntry; pid: number | undefined }[] {
  let current: number | undefined;
  return journal.map((entry) => {
    if (entry.type === 'start') current = entry.pid;
    return { entry, pid: entry.pid ?? current };
  });
}

/**
 * Every attempt in the routing journal, judged with zero tolerance against the routable set of
 * the process that sent it: the worker must be in that process's set at that point of the
 * journal (entered, and not left since, in the same process). Each process that routes (the
 * scheduler, every data-plane process) keeps its own set: a worker one process ejected for its
 * own failed attempts stays routable in the others. Leaving routing for any reason counts:
 * draining, unready (liveness), ejected, failed, gone, registered again. That a drain or a
 * removal reaches every process is judged by {@link checkGlobalRemovals}.
 */
export function checkRouting(journal: readonly JournalEntry[]): RoutingViolation[] {
  const processes = new Map<number | undefined, ProcessRouting>();
  const of = (pid: number | undefined): ProcessRouting => {
    let view = processes.get(pid);
    if (view === undefined) {
      view = { routable: new Set(), left: new Map() };
      processes.set(pid, view);
    }
    return view;
  };
  const out: RoutingViolation[] = [];
  for (const { entry: e, pid } of journalProcesses(journal)) {
    if (e.type === 'start') {
      // A new process (a pid seen again is a new process too): nothing routable yet.
      processes.set(pid, { routable: new Set(), left: new Map() });
      continue;
    }
    const view = of(pid);
    if (e.type === 'route') {
      if (e.routable) view.routable.add(e.workerId);
      else {
        view.routable.delete(e.workerId);
        view.left.set(e.workerId, { time: e.time, reason: e.reason });
      }
    } else if (!view.routable.has(e.workerId)) {
      const why = view.left.get(e.workerId);
      const who = pid === undefined ? {} : { pid };
      out.push(
        why === undefined
          ? { attempt: e, ...who, reason: 'never routable in this process' }
          : { attempt: e, ...who, leftAt: why.time, reason: why.reason },
      );
    }
  }
  return out;
}

/**
 * Requests the routing journal does not account for: a request that got an answer from a
 * worker must have an attempt in the journal, and one of its attempts must name the worker
 * the client was told (`x-elastic-selected-worker-id`: the worker that started the answer; a
 * generation continued on other workers has later attempts to them). So a journal that stops
 * recording cannot pass the routing check by being empty.
 */
export function unjournaled(
  requests: readonly RequestRecord[],
  journal: readonly JournalEntry[],
): RequestRecord[] {
  const workers = new Map<string, Set<string>>();
  for (const e of journal) {
    if (e.type !== 'attempt') continue;
    const seen = workers.get(e.requestId) ?? new Set<string>();
    seen.add(e.workerId);
    workers.set(e.requestId, seen);
  }
  return requests.filter((r) => {
    if (r.firstByte === undefined || r.outcome !== 'ok') return false;
    const seen = workers.get(r.id);
    return seen === undefined || (r.worker !== undefined && !seen.has(r.worker));
  });
}

/**
 * Jobs of this scheduler seen in squeue that it never logged as `submitted`: a submission it
 * does not know about (an sbatch that ran twice, a retry after an ambiguous failure that
 * did not look for the tag first). Each is a duplicate submission.
 */
export function unknownJobs(
  queue: readonly QueueSample[],
  events: readonly SchedulerEvent[],
): string[] {
  const submitted = new Set(
    events.filter((e) => e.event === 'submitted' && e.jobId !== undefined).map((e) => e.jobId),
  );
  return jobsSeen(queue).filter((id) => !submitted.has(id));
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

/** The nearest-rank percentile `p` (0-100) of numbers (undefined for none). */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
