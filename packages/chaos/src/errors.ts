/** Codes of {@link ChaosError}. */
export type ChaosErrorCode = 'NOT_FOUND' | 'TIMEOUT' | 'START_FAILED' | 'BAD_HISTORY';

/** The one error class of `@es/chaos`: a fault could not be injected or a process not started. */
export class ChaosError extends Error {
  override readonly name = 'ChaosError';
  readonly code: ChaosErrorCode;

  constructor(code: ChaosErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
