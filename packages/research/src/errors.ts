/** Machine-readable reasons a research-tooling call can fail. */
export type ResearchErrorCode =
  /** A command-line flag or option has an invalid value. */
  | 'INVALID_OPTION'
  /** No chat template could be found or parsed in a model directory. */
  | 'TEMPLATE_NOT_FOUND'
  /** The chat template raised or failed while rendering. */
  | 'TEMPLATE_RENDER'
  /** The dataset file is missing, empty or malformed. */
  | 'DATASET_INVALID'
  /** No worker became ready within `--wait-timeout`. */
  | 'WORKERS_NOT_READY'
  /** The inference endpoint could not be reached or answered with an error. */
  | 'ENGINE_FAILED'
  /** A tool (search, URL reader) failed after its retries. */
  | 'TOOL_FAILED';

/** Options of {@link ResearchError}. */
export interface ResearchErrorOptions {
  /** The flag or option at fault, e.g. `--concurrency`. */
  field?: string;
  /** HTTP status of a failed upstream call. */
  status?: number;
  cause?: unknown;
}

/**
 * The one error class of `@es/research`. `code` says what went wrong; `field` names the
 * option at fault when there is one.
 *
 * @example
 * ```ts
 * try {
 *   await loadChatTemplate('/models/gpt-oss-120b');
 * } catch (error) {
 *   if (error instanceof ResearchError && error.code === 'TEMPLATE_NOT_FOUND') process.exit(2);
 *   throw error;
 * }
 * ```
 */
export class ResearchError extends Error {
  override readonly name = 'ResearchError';
  readonly code: ResearchErrorCode;
  readonly field: string | undefined;
  readonly status: number | undefined;

  constructor(code: ResearchErrorCode, message: string, options: ResearchErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options.field;
    this.status = options.status;
  }
}
