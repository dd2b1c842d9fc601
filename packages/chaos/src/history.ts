/**
 * The recorded history of a chaos run: one record per client request and the scheduler's
 * lifecycle events. Plain data, so checkers are pure functions over it.
 */
import type { RoutingJournalEntry } from '@es/proxy';
import { ChaosError } from './errors.js';
import type { EngineLog } from './engine-log.js';

/**
 * How one request ended, as the client saw it:
 * - `ok`: a full answer (non-streaming 2xx, or a stream that reached a `finish_reason`);
 * - `error-event`: a stream that ended with an SSE error event (the clean way to fail);
 * - `error-status`: an HTTP error status with a body (after the client's own retries);
 * - `connection-error`: no HTTP answer at all (after the client's own retries);
 * - `truncated`: a stream (or body) that ended cleanly but without a finish reason and
 *   without an error event: a silent truncation, the worst outcome;
 * - `reset`: the connection broke after the first byte (the client gets an exception, not a
 *   clean error event);
 * - `hung`: no progress for longer than the hang timeout; the client gave up.
 */
export type RequestOutcome =
  'ok' | 'error-event' | 'error-status' | 'connection-error' | 'truncated' | 'reset' | 'hung';

/** One client request. Times are ms since epoch (`Date.now()`), comparable with log times. */
export interface RequestRecord {
  /** The client's id, sent as `x-request-id`. */
  id: string;
  stream: boolean;
  /**
   * The user message sent (one-message chat at temperature 0), so the checker can compute
   * what the engine must have produced. Absent in histories that do not judge content.
   */
  prompt?: string;
  /** `max_tokens` sent. */
  maxTokens?: number;
  /** The content received: the message's text, or the stream's deltas joined. */
  content?: string;
  /** Worker id from the proxy's response header, when it sets one. */
  worker?: string;
  start: number;
  /** First response byte (headers for non-streaming, first chunk for streams). */
  firstByte?: number;
  end: number;
  /** Content bytes received (stream chunk text or message content). */
  bytes: number;
  outcome: RequestOutcome;
  /** HTTP attempts the client made (the `openai` client retries connection errors and 5xx). */
  attempts: number;
  status?: number;
  /** `error.code` (or `error.type`) of an error answer or event. */
  errorCode?: string;
  message?: string;
}

/** A scheduler lifecycle event, read from its pino JSON log (`event` field). */
export interface SchedulerEvent {
  /** ms since epoch (the log line's `time`). */
  time: number;
  /** `submitted`, `running`, `registered`, `ready`, `draining`, `gone`, `preempted`, ... */
  event: string;
  jobId?: string;
  workerId?: string;
  reason?: string;
}

/** One `squeue` sample: the live job ids carrying this scheduler's job name. */
export interface QueueSample {
  time: number;
  /** `jobId` → SLURM state (`PENDING`, `RUNNING`, ...). */
  jobs: Record<string, string>;
}

/** A sample of the scheduler's ready worker count (`GET /health`). */
export interface CapacitySample {
  time: number;
  ready: number;
}

/**
 * One line of the routing journal (`ES_ROUTING_JOURNAL`): the proxy's `RoutingJournalEntry`
 * lines, plus a `start` line each time a process that routes starts (nothing is routable in a
 * new process until it says so). Every process that routes appends to the one file: the
 * scheduler (its in-process `/v1`) and each data-plane process (`es-proxy`); each line names
 * its writer's `pid`, so each process's routing is judged against its own table. Lines without
 * a `pid` (journals of one process) belong to the process of the last `start` line.
 */
export type JournalEntry =
  (RoutingJournalEntry & { pid?: number }) | { type: 'start'; time: number; pid: number };

/** Everything one run recorded. */
export interface History {
  requests: RequestRecord[];
  events: SchedulerEvent[];
  queue: QueueSample[];
  capacity: CapacitySample[];
  /** The routing journal of every scheduler process of the run, in file order. */
  journal: JournalEntry[];
  /** The engines' request logs (absent in histories recorded before engines kept them). */
  engine?: EngineLog;
}

/**
 * Parses the routing journal (JSON lines). A line cut by a SIGKILL (the last one of a
 * process) is skipped: at most one per process that started (several processes append to one
 * file, so the cut line need not be the last); anything else malformed throws, so a broken
 * recorder cannot pass.
 */
export function parseJournal(text: string): JournalEntry[] {
  const entries: JournalEntry[] = [];
  const lines = text.split('\n');
  const starts = lines.filter((l) => l.includes('"type":"start"')).length;
  let cut = 0;
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      // Only the last line a process wrote may be cut: the file's last, the one before the
      // next `start`, or one per started process.
      const next = lines.slice(i + 1).find((l) => l.trim() !== '');
      if (next === undefined || next.includes('"type":"start"') || ++cut <= starts) return;
      throw new ChaosError('bad_history', `routing journal line ${i + 1} is not JSON: ${line}`, {
        cause: error,
      });
    }
    const e = parsed as Partial<JournalEntry>;
    const known =
      typeof e.time === 'number' &&
      (e.pid === undefined || typeof e.pid === 'number') &&
      ((e.type === 'start' && typeof (e as { pid?: unknown }).pid === 'number') ||
        (e.type === 'route' &&
          typeof e.workerId === 'string' &&
          typeof (e as { routable?: unknown }).routable === 'boolean') ||
        (e.type === 'attempt' &&
          typeof e.workerId === 'string' &&
          typeof (e as { requestId?: unknown }).requestId === 'string'));
    if (!known) {
      throw new ChaosError('bad_history', `routing journal line ${i + 1} is not an entry: ${line}`);
    }
    entries.push(e as JournalEntry);
  });
  return entries;
}

/**
 * Parses the scheduler's pino JSON log into lifecycle events; other lines (plain text,
 * messages without `event`) are skipped.
 * @example
 * const events = parseSchedulerLog(readFileSync('scheduler.log', 'utf8'));
 */
export function parseSchedulerLog(text: string): SchedulerEvent[] {
  const events: SchedulerEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (typeof parsed.event !== 'string' || typeof parsed.time !== 'number') continue;
    const event: SchedulerEvent = { time: parsed.time, event: parsed.event };
    if (typeof parsed.jobId === 'string') event.jobId = parsed.jobId;
    if (typeof parsed.workerId === 'string') event.workerId = parsed.workerId;
    if (typeof parsed.reason === 'string') event.reason = parsed.reason;
    events.push(event);
  }
  return events;
}
