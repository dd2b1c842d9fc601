/**
 * What one mock engine counts and shares between its routes: the options, the batch, the
 * counters behind `/metrics` and `stats()`, the request log, the seeded failure dice and
 * the crash budget of `crashAfter`.
 */
import { createBatch } from './batch.js';
import type { Batch } from './batch.js';
import type { MockEngineStats } from './metrics.js';
import { resolveOptions } from './options.js';
import type { MockEngineOptions, ResolvedOptions } from './options.js';
import { createRequestLog } from './request-log.js';

/** The outcome counters of inference requests, and the prompt and generated tokens. */
export interface Counters {
  completed: number;
  aborted: number;
  failed: number;
  killed: number;
  prompt: number;
  generated: number;
}

/** The state the routes of one engine share. */
export interface EngineState {
  opts: ResolvedOptions;
  /** Seeded by `seed`: whether a request fails under `failRate`. */
  random: () => number;
  log: ReturnType<typeof createRequestLog>;
  /** Requests received per path. */
  requests: Record<string, number>;
  counters: Counters;
  batch: Batch;
  stats(): MockEngineStats;
  /**
   * Count an inference request as done (whatever its outcome) and crash when the
   * configured budget is spent: the response in flight is allowed to finish first.
   */
  finishInference(): void;
  /** `onKill`, else close the engine: the process dies mid-stream (`killMidStream`). */
  kill: () => void;
}

/** mulberry32: a tiny seeded PRNG so `failRate` runs are reproducible. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The state of a new engine; `close` is what a crash or kill does without a hook. */
export function createEngineState(options: MockEngineOptions, close: () => void): EngineState {
  const opts: ResolvedOptions = resolveOptions(options);
  const batch = createBatch(opts.maxNumSeqs);
  const requests: Record<string, number> = {};
  const counters = { completed: 0, aborted: 0, failed: 0, killed: 0, prompt: 0, generated: 0 };
  let answered = 0;
  let crashed = false;
  const crash = options.onCrash ?? close;
  return {
    opts,
    random: seededRandom(opts.seed),
    log: createRequestLog(opts.requestLogDir),
    requests,
    counters,
    batch,
    stats: () => ({
      requests: { ...requests },
      completed: counters.completed,
      aborted: counters.aborted,
      failed: counters.failed,
      killed: counters.killed,
      running: batch.running,
      waiting: batch.waiting,
      kvCacheUsage: Math.min(1, batch.kvTokens / opts.kvCacheTokens),
      promptTokens: counters.prompt,
      generationTokens: counters.generated,
    }),
    finishInference() {
      answered++;
      if (opts.crashAfter !== undefined && answered >= opts.crashAfter && !crashed) {
        crashed = true;
        setImmediate(crash);
      }
    },
    kill: options.onKill ?? close,
  };
}
