/**
 * The promises, judged in one place: the same checks for one fault's window and for the whole
 * run, from the recorded history only (so a kept history can be judged again later).
 */
import {
  checkContent,
  checkRequests,
  checkRouting,
  maxLiveJobs,
  unattributed,
  unjournaled,
  unknownJobs,
} from './checker.js';
import { checkGlobalRemovals } from './data-plane-checks.js';
import {
  continuations,
  missingFromEngineLog,
  restartsFromScratch,
  type EngineLog,
} from './engine-log.js';
import { expectedContent } from './expected.js';
import type { JournalEntry, QueueSample, RequestRecord, SchedulerEvent } from './history.js';

/** What one judgement looks at. */
export interface JudgeInput {
  requests: readonly RequestRecord[];
  /**
   * The whole routing journal (routing state at a window's start depends on what came
   * before); only attempts inside `window` are judged.
   */
  journal: readonly JournalEntry[];
  /** Judge only the journal's attempts in [from, to) (default: all). */
  window?: { from: number; to: number };
  /** The scheduler's lifecycle events (the whole run's: submissions are matched by job id). */
  events: readonly SchedulerEvent[];
  /** squeue samples in the window. */
  queue: readonly QueueSample[];
  maxNodes: number;
  /** Requests a fault excuses by id (e.g. streams the killed scheduler itself carried). */
  excused?: ReadonlySet<string>;
  /**
   * The engines' request logs: with them, generations restarted from scratch are judged
   * (and answers the logs do not account for, so a log that stops being written cannot pass).
   */
  engine?: EngineLog;
}

/** Check name → violations (0 = kept), and a few offenders per broken check. */
export interface Judgement {
  checks: Record<string, number>;
  offenders: Record<string, string[]>;
}

/** The names of the checks {@link judge} reports, in report order. */
export const CHECKS = [
  'non-streaming lost',
  'silent truncations',
  'hung clients',
  'unclean stream ends',
  '4xx on valid requests',
  'content not what the engine produced',
  'attempts to workers out of routing',
  'attempts to drained or removed workers (any process)',
  'answers missing from the routing journal',
  'answers without a worker header',
  'jobs the scheduler never submitted',
  'over-acquisition',
  'generations restarted from scratch',
  'answers missing from the engine request logs',
] as const;

/** The checks that need the engines' request logs ({@link JudgeInput.engine}). */
const ENGINE_CHECKS: ReadonlySet<string> = new Set([
  'generations restarted from scratch',
  'answers missing from the engine request logs',
]);

const brief = (r: RequestRecord) =>
  `${r.id} (${r.stream ? 'stream' : 'non-streaming'}, ${r.outcome}${r.status === undefined ? '' : ` ${r.status}`}${r.worker === undefined ? '' : ` on ${r.worker}`}${r.message === undefined ? '' : `: ${r.message.slice(0, 80)}`})`;

/**
 * Judge a history (or one window of it) against every promise.
 * @example
 * const { checks } = judge({ requests, journal, events, queue, maxNodes: 3 });
 */
export function judge(input: JudgeInput): Judgement {
  const excused = input.excused ?? new Set<string>();
  const requests = input.requests.filter((r) => !excused.has(r.id));
  const v = checkRequests(requests);
  const content = checkContent(requests, expectedContent);
  const window = input.window;
  const routing = checkRouting(input.journal).filter(
    (r) => window === undefined || (r.attempt.time >= window.from && r.attempt.time < window.to),
  );
  const removals = checkGlobalRemovals(input.journal).filter(
    (r) => window === undefined || (r.attempt.time >= window.from && r.attempt.time < window.to),
  );
  const missing = unjournaled(requests, input.journal);
  const headerless = unattributed(requests);
  const unknown = unknownJobs(input.queue, input.events);
  const over = Math.max(0, maxLiveJobs(input.queue).max - input.maxNodes);
  const engine = input.engine;
  // One per generation: a request restarted twice is one broken generation. Only requests
  // the client sent once: a client's own retry (after a connection error or a 5xx, judged by
  // the other checks) asks for the generation again itself.
  const restarts = new Map<string, string>();
  if (engine !== undefined) {
    const sentOnce = new Set(requests.filter((q) => q.attempts <= 1).map((q) => q.id));
    // A continuation the proxy started from 0 received tokens (its event says so) sends
    // the bare prompt: the dead engine's first token was still in flight, nothing the proxy
    // had was thrown away. A continuation that claims tokens but sends the bare prompt (the
    // planted continue-from-scratch) stays a restart.
    const fromNothing = new Set(
      continuations(input.events)
        .filter((c) => c.generatedTokens === 0 && c.outcome !== 'refused')
        .map((c) => c.requestId),
    );
    for (const r of restartsFromScratch(engine, sentOnce)) {
      if (restarts.has(r.requestId)) continue;
      if (r.again.path === '/v1/completions' && fromNothing.has(r.requestId)) continue;
      restarts.set(
        r.requestId,
        `${r.requestId}: ${r.again.path} with its ${r.again.promptTokens} prompt tokens again on engine pid ${r.again.pid} at ${new Date(r.again.at).toISOString()}, ${r.again.at - r.after.at} ms after engine pid ${r.after.pid} sent its first token`,
      );
    }
  }
  const found: Record<(typeof CHECKS)[number], string[]> = {
    'non-streaming lost': v.lostNonStreaming.map(brief),
    'silent truncations': v.silentTruncations.map(brief),
    'hung clients': v.hung.map(brief),
    'unclean stream ends': v.uncleanStreams.map(brief),
    '4xx on valid requests': v.clientErrors.map(brief),
    'content not what the engine produced': content.map(
      (c) =>
        `${brief(c.request)} ${c.why}: got ${JSON.stringify(c.request.content?.slice(0, 60))}, expected ${JSON.stringify(c.expected?.slice(0, 60))}`,
    ),
    'attempts to workers out of routing': routing.map(
      (r) =>
        `${r.attempt.requestId} attempt ${r.attempt.attempt} to ${r.attempt.workerId}${r.pid === undefined ? '' : ` by pid ${r.pid}`} at ${new Date(r.attempt.time).toISOString()}, ${r.leftAt === undefined ? '' : `${r.attempt.time - r.leftAt} ms after it left its routing `}(${r.reason})`,
    ),
    'attempts to drained or removed workers (any process)': removals.map(
      (r) =>
        `${r.attempt.requestId} attempt ${r.attempt.attempt} to ${r.attempt.workerId}${r.pid === undefined ? '' : ` by pid ${r.pid}`} at ${new Date(r.attempt.time).toISOString()}, ${r.attempt.time - r.removedAt} ms after it left routing (${r.reason})`,
    ),
    'answers missing from the routing journal': missing.map(brief),
    'answers without a worker header': headerless.map(brief),
    'jobs the scheduler never submitted': unknown.map((id) => `job ${id}`),
    'over-acquisition':
      over > 0 ? [`${maxLiveJobs(input.queue).max} live jobs > ${input.maxNodes}`] : [],
    'generations restarted from scratch': [...restarts.values()],
    'answers missing from the engine request logs':
      engine === undefined ? [] : missingFromEngineLog(requests, engine).map(brief),
  };
  const checks: Record<string, number> = {};
  const offenders: Record<string, string[]> = {};
  for (const name of CHECKS) {
    if (engine === undefined && ENGINE_CHECKS.has(name)) continue;
    checks[name] = name === 'over-acquisition' ? over : found[name].length;
    if (found[name].length > 0) offenders[name] = found[name].slice(0, 5);
  }
  return { checks, offenders };
}
