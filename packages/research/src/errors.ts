import { EsError } from '@es/protocol';

/** Machine-readable reasons a research-tooling call can fail. */
export type ResearchErrorCode =
  /** A command-line flag or option has an invalid value. */
  | 'invalid_option'
  /** No chat template could be found or parsed in a model directory. */
  | 'template_not_found'
  /** The chat template raised or failed while rendering. */
  | 'template_render'
  /** The dataset file is missing, empty or malformed. */
  | 'dataset_invalid'
  /** No worker became ready within `--wait-timeout`. */
  | 'workers_not_ready'
  /** The inference endpoint could not be reached or answered with an error. */
  | 'engine_failed'
  /** A tool (search, URL reader) failed after its retries. */
  | 'tool_failed';

/** Options of {@link ResearchError}. */
export interface ResearchErrorOptions {
  /** The flag or option at fault, without its dashes, e.g. `concurrency`. */
  param?: string;
  /** HTTP status of a failed upstream call. */
  status?: number;
  cause?: unknown;
}

/**
 * The one error class of `@es/research`. `code` says what went wrong; `param` names the
 * option at fault when there is one.
 *
 * @example
 * ```ts
 * try {
 *   await loadChatTemplate('/models/gpt-oss-120b');
 * } catch (error) {
 *   if (error instanceof ResearchError && error.code === 'template_not_found') process.exit(2);
 *   throw error;
 * }
 * ```
 */
export class ResearchError extends EsError<ResearchErrorCode> {
  override readonly name = 'ResearchError';
}
