/** HTTP with per-attempt timeouts and retries with backoff, for the tools' upstream APIs. */
import { ResearchError } from './errors.js';
import { messageOf, sleep } from './util.js';

/** Retry policy of {@link fetchWithRetry}. */
export interface RetryOptions {
  /** Per-attempt timeout. */
  timeoutMs: number;
  /** Retries after the first attempt (on network errors, timeouts, 429 and 5xx). */
  maxRetries: number;
  /** First backoff delay; doubles each retry, with jitter, capped at 30 s. */
  retryBaseMs: number;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

const MAX_DELAY_MS = 30_000;

/**
 * Fetches `url`, retrying transient failures. Resolves with the first successful
 * response; throws `TOOL_FAILED` (with `status` when the server answered) otherwise.
 */
export async function fetchWithRetry(
  url: string,
  init: RequestInit,
  options: RetryOptions,
): Promise<Response> {
  const doFetch = options.fetch ?? fetch;
  for (let attempt = 0; ; attempt += 1) {
    const last = attempt >= options.maxRetries;
    const timeout = AbortSignal.timeout(options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await doFetch(url, { ...init, signal });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const what = timeout.aborted ? `timed out after ${options.timeoutMs} ms` : messageOf(error);
      if (last) {
        throw new ResearchError('TOOL_FAILED', `${hostOf(url)}: ${what}`, { cause: error });
      }
      await sleep(backoff(attempt, options.retryBaseMs), options.signal);
      continue;
    }
    if (response.ok) return response;
    const retryable = response.status === 429 || response.status >= 500;
    if (!retryable || last) {
      const body = (await response.text().catch(() => '')).slice(0, 300).trim();
      throw new ResearchError(
        'TOOL_FAILED',
        `${hostOf(url)} answered HTTP ${response.status}${body ? `: ${body}` : ''}`,
        { status: response.status },
      );
    }
    await response.body?.cancel();
    const delay =
      retryAfterMs(response.headers.get('retry-after')) ?? backoff(attempt, options.retryBaseMs);
    await sleep(Math.min(delay, MAX_DELAY_MS), options.signal);
  }
}

function backoff(attempt: number, baseMs: number): number {
  const exponential = Math.min(baseMs * 2 ** attempt, MAX_DELAY_MS);
  // Full jitter between half and all of the delay keeps concurrent workers from retrying in step.
  return exponential / 2 + Math.random() * (exponential / 2);
}

function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
