/** Codes carried by {@link MockEngineError}. */
export type MockEngineErrorCode = 'INVALID_OPTION' | 'INVALID_SCRIPT' | 'NOT_LISTENING';

/**
 * The one error class of `@es/mock-engine`: invalid options, an unreadable or malformed
 * `--script` file, or asking for the URL of an engine that is not listening.
 */
export class MockEngineError extends Error {
  override readonly name = 'MockEngineError';
  /** Stable machine-readable code. */
  readonly code: MockEngineErrorCode;

  constructor(code: MockEngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
