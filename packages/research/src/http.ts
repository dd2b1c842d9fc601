/** HTTP with per-attempt timeouts and retries with backoff (ky's), for the tools' upstream APIs. */
import ky, { HTTPError, TimeoutError } from 'ky';
import { ResearchError } from './errors.js';
import { messageOf } from './util.js';

/** Retry policy of {@link fetchWithRetry}. */
export interface RetryOptions {
  /** Per-attempt timeout. */
  timeoutMs: number;
  /** Retries after the first attempt (on network errors, timeouts, 429 and 5xx). */
  maxRetries: number;
  /**
   * First backoff delay; doubles each retry, with jitter (between half and all of it),
   * capped at 30 s. A `Retry-After` on a 429 or 5xx answer is waited instead (at most 30 s).
   */
  retryBaseMs: number;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

const MAX_DELAY_MS = 30_000;
/** 429 and every 5xx: the failures a later attempt may get past. */
const RETRIED_STATUSES = [429, ...Array.from({ length: 100 }, (_, i) => 500 + i)];

/**
 * Fetches `url` with ky, which retries transient failures (any method: the tools' POSTs are
 * searches, safe to repeat). Resolves with the first successful response; throws
 * `tool_failed` (with `status` when the server answered) otherwise.
 */
export async function fetchWithRetry(
  url: string,
  init: RequestInit,
  options: RetryOptions,
): Promise<Response> {
  try {
    return await ky(url, {
      ...init,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      timeout: options.timeoutMs,
      retry: {
        limit: options.maxRetries,
        methods: ['get', 'post', 'put', 'patch', 'head', 'delete', 'options', 'trace'],
        statusCodes: RETRIED_STATUSES,
        afterStatusCodes: RETRIED_STATUSES,
        maxRetryAfter: MAX_DELAY_MS,
        backoffLimit: MAX_DELAY_MS,
        retryOnTimeout: true,
        delay: (attempt) => options.retryBaseMs * 2 ** (attempt - 1),
        // Between half and all of the delay keeps concurrent workers from retrying in step.
        jitter: (delay) => delay / 2 + Math.random() * (delay / 2),
      },
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    if (error instanceof HTTPError) {
      const { status } = error.response;
      const body = (await error.response.text().catch(() => '')).slice(0, 300).trim();
      throw new ResearchError(
        'tool_failed',
        `${hostOf(url)} answered HTTP ${status}${body ? `: ${body}` : ''}`,
        { status },
      );
    }
    const what =
      error instanceof TimeoutError ? `timed out after ${options.timeoutMs} ms` : messageOf(error);
    throw new ResearchError('tool_failed', `${hostOf(url)}: ${what}`, { cause: error });
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
