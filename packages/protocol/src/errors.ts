/**
 * The base error of `@es/protocol`: every error this package throws is a `ProtocolError`
 * with a fixed `name` and a string `code` (`SecretFileError` for the secret policy,
 * `WorkerArgvError` for the worker's command line). The worker client never throws: it
 * returns its failures as results.
 */
export class ProtocolError<Code extends string = string> extends Error {
  override readonly name: string = 'ProtocolError';
  constructor(
    readonly code: Code,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Whether `error` is a {@link ProtocolError} (of any subclass). */
export function isProtocolError(error: unknown): error is ProtocolError {
  return error instanceof ProtocolError;
}
