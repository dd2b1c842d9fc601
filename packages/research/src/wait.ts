/**
 * Waiting for the scheduler's workers before the first trajectory, as the original tool did
 * (it polled `/cluster_status` for up to 10 minutes): a run started together with the
 * scheduler would otherwise fail its first trajectories while the engines load.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ResearchError } from './errors.js';
import { isRecord, messageOf } from './util.js';

/** Options of {@link waitForReadyWorkers}. */
export interface WaitForWorkersOptions {
  /** The scheduler, without `/v1`. */
  schedulerUrl: string;
  apiKey?: string | undefined;
  /** Give up after this long, default 600000 ms (0: check once, do not wait). */
  timeoutMs?: number | undefined;
  /** Between checks, default 5000 ms. */
  intervalMs?: number | undefined;
  /** Progress lines go here. */
  log: NodeJS.WritableStream;
  signal?: AbortSignal | undefined;
  fetch?: typeof fetch | undefined;
}

/** What {@link waitForReadyWorkers} found. */
export interface WorkersReady {
  /** Ready workers at the last check; undefined when the server has no `/cluster_status`. */
  readyWorkers: number | undefined;
  /** The scheduler's model, when `/cluster_status` names one. */
  model: string | undefined;
  waitedMs: number;
}

interface ClusterCounts {
  ready: number;
  loading: number;
  offline: number;
  pendingJobs: number;
  model: string | undefined;
}

/**
 * Polls `<scheduler>/cluster_status` until it reports a ready worker, printing one line per
 * check while it waits. A server without `/cluster_status` (HTTP 404: an engine such as vLLM
 * used directly) is taken as ready. An unreachable scheduler is waited for too (it may be
 * starting). Throws `workers_not_ready` when `timeoutMs` runs out.
 *
 * @example
 * ```ts
 * await waitForReadyWorkers({ schedulerUrl: 'http://localhost:8780', log: process.stderr });
 * ```
 */
export async function waitForReadyWorkers(options: WaitForWorkersOptions): Promise<WorkersReady> {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 600_000;
  const intervalMs = options.intervalMs ?? 5_000;
  const base = options.schedulerUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
  const url = `${base}/cluster_status`;
  const doFetch = options.fetch ?? fetch;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.apiKey && options.apiKey !== 'EMPTY') {
    headers.authorization = `Bearer ${options.apiKey}`;
  }
  for (;;) {
    const waited = Date.now() - started;
    let state: string;
    try {
      const response = await doFetch(url, {
        headers,
        signal: options.signal
          ? AbortSignal.any([options.signal, AbortSignal.timeout(10_000)])
          : AbortSignal.timeout(10_000),
      });
      if (response.status === 404) {
        await response.body?.cancel();
        options.log.write(
          `${url} does not exist (not an Elastic Serving scheduler): not waiting for workers\n`,
        );
        return { readyWorkers: undefined, model: undefined, waitedMs: waited };
      }
      if (!response.ok) {
        await response.body?.cancel();
        state = `${url} answered HTTP ${response.status}`;
      } else {
        const counts = countsOf(await response.json().catch(() => undefined));
        if (counts === undefined) {
          options.log.write(`${url} has no ready_workers count: not waiting for workers\n`);
          return { readyWorkers: undefined, model: undefined, waitedMs: waited };
        }
        if (counts.ready > 0) {
          options.log.write(
            `cluster: ${counts.ready} ready workers` +
              (counts.model ? ` serving ${counts.model}` : '') +
              (waited > 0 ? ` (after ${(waited / 1000).toFixed(1)} s)` : '') +
              '\n',
          );
          return { readyWorkers: counts.ready, model: counts.model, waitedMs: waited };
        }
        state =
          `0 ready, ${counts.loading} loading, ${counts.offline} offline workers, ` +
          `${counts.pendingJobs} pending jobs`;
      }
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const cause = (error as { cause?: unknown }).cause;
      state = `cannot reach ${url} (${messageOf(cause ?? error)})`;
    }
    if (waited >= timeoutMs) {
      throw new ResearchError(
        'workers_not_ready',
        `no ready worker at ${base} after ${Math.round(timeoutMs / 1000)} s (last check: ` +
          `${state}). See the scheduler's log or \`scripts/es status\`; raise --wait-timeout ` +
          'to wait longer',
        { param: 'wait-timeout' },
      );
    }
    options.log.write(
      `waiting for ready workers: ${state} (${Math.round(waited / 1000)} s of ` +
        `${Math.round(timeoutMs / 1000)} s)\n`,
    );
    await sleep(Math.min(intervalMs, Math.max(0, timeoutMs - waited)), undefined, {
      signal: options.signal,
    });
  }
}

function countsOf(body: unknown): ClusterCounts | undefined {
  if (!isRecord(body) || typeof body.ready_workers !== 'number') return undefined;
  const num = (value: unknown) => (typeof value === 'number' ? value : 0);
  return {
    ready: body.ready_workers,
    loading: num(body.loading_workers),
    offline: num(body.offline_workers),
    pendingJobs: num(body.pending_slurm_jobs),
    model: typeof body.model === 'string' && body.model !== '' ? body.model : undefined,
  };
}
