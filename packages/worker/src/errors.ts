/** Machine-readable codes of {@link WorkerError}. */
export type WorkerErrorCode =
  'INVALID_OPTION' | 'INVALID_EXTRA_ARGS' | 'REGISTRATION_FAILED' | 'ENGINE_GUARD_MISSING';

/**
 * The one error class of `@es/worker`. `field` names the option to fix for `INVALID_OPTION`
 * and `INVALID_EXTRA_ARGS`.
 */
export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  /** What went wrong, for programs. */
  readonly code: WorkerErrorCode;
  /** The option the error is about, when there is one. */
  readonly field: string | undefined;

  constructor(
    code: WorkerErrorCode,
    message: string,
    options: { field?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.field = options.field;
  }
}
