/**
 * The one error vocabulary of Elastic Serving (CONTRIBUTING.md, "Errors"). Every error a
 * package throws on purpose is an {@link EsError}: a fixed `name` per package, a snake_case
 * `code` that says what went wrong, `param` naming the input it is about (a request field,
 * a flag without its dashes, a config path) and, at an HTTP edge, the `status` it is
 * answered with. Every HTTP error answer, from the proxy, the worker protocol and the admin
 * API alike, is one body: {@link openAIErrorBody}.
 */

/** OpenAI error `type` values: OpenAI answers 4xx (401 and 404 included) with `invalid_request_error`. */
export type OpenAIErrorType = 'invalid_request_error' | 'server_error';

/** Body of every error answer (and of a mid-stream SSE error event). */
export interface OpenAIErrorBody {
  error: { message: string; type: OpenAIErrorType; param: string | null; code: string | null };
}

/** The OpenAI error type of an HTTP status: clients key on `code`, and on the status. */
export function openAIErrorType(status: number): OpenAIErrorType {
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

/**
 * The body of an error answer.
 * @example
 * res.end(JSON.stringify(openAIErrorBody('invalid_api_key', 'Incorrect API key.', 401)));
 */
export function openAIErrorBody(
  code: string | null,
  message: string,
  status: number,
  param?: string | null,
): OpenAIErrorBody {
  return { error: { message, type: openAIErrorType(status), param: param ?? null, code } };
}

/** Options of {@link EsError}. */
export interface EsErrorOptions {
  /** The input the error is about: a request field, a flag without its dashes, a config path. */
  param?: string | undefined;
  /** HTTP status when the error reaches an HTTP edge. */
  status?: number | undefined;
  cause?: unknown;
}

/**
 * The base of every package's error class.
 * @example
 * class PoolError extends EsError<PoolErrorCode> { override readonly name = 'PoolError'; }
 * if (isEsError(error, 'fenced')) process.exit(3);
 */
export class EsError<Code extends string = string> extends Error {
  override readonly name: string = 'EsError';
  readonly code: Code;
  readonly param: string | undefined;
  readonly status: number | undefined;

  constructor(code: Code, message: string, options: EsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.param = options.param;
    this.status = options.status;
  }

  /** The OpenAI-shaped body of this error (status 500 when it has none). */
  toJSON(): OpenAIErrorBody {
    return openAIErrorBody(this.code, this.message, this.status ?? 500, this.param);
  }
}

/** Whether `error` is an {@link EsError} of any package (with `code`, when given). */
export function isEsError(error: unknown, code?: string): error is EsError {
  return error instanceof EsError && (code === undefined || error.code === code);
}

/**
 * The base error of `@es/protocol` (`SecretFileError` for the secret policy,
 * `WorkerArgvError` for the worker's command line). The worker client never throws: it
 * returns its failures as results.
 */
export class ProtocolError<Code extends string = string> extends EsError<Code> {
  override readonly name: string = 'ProtocolError';
}

/** Whether `error` is a {@link ProtocolError} (of any subclass). */
export function isProtocolError(error: unknown): error is ProtocolError {
  return error instanceof ProtocolError;
}
