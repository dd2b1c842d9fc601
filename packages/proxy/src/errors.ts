/** OpenAI error `type` values the proxy emits. */
export type OpenAIErrorType = 'invalid_request_error' | 'server_error';

/** Machine-readable codes of every error the proxy itself produces. */
export type ProxyErrorCode =
  | 'invalid_json'
  | 'invalid_request_body'
  | 'missing_model'
  | 'request_too_large'
  | 'request_timeout'
  | 'unsupported_media_type'
  | 'invalid_api_key'
  | 'model_not_found'
  | 'unknown_url'
  | 'queue_full'
  | 'no_capacity'
  | 'body_budget_exhausted'
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'upstream_stream_interrupted'
  | 'client_closed_request'
  | 'internal_error';

/** Options of {@link ProxyError}. */
export interface ProxyErrorOptions {
  /** HTTP status sent to the client. */
  status: number;
  /** OpenAI error type (defaults from the status). */
  type?: OpenAIErrorType;
  /** Request field the error is about (`model`, ...). */
  param?: string | null;
  /** Extra response headers (e.g. `Retry-After`). */
  headers?: Record<string, string>;
  cause?: unknown;
}

/**
 * The one error class of `@es/proxy`. Every failure that reaches a client becomes an
 * OpenAI-shaped body `{"error": {"message", "type", "param", "code"}}` built from it.
 * @example
 * throw new ProxyError('missing_model', 'you must provide a model parameter', { status: 400, param: 'model' });
 */
export class ProxyError extends Error {
  override readonly name = 'ProxyError';
  readonly code: ProxyErrorCode;
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(code: ProxyErrorCode, message: string, options: ProxyErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status;
    this.type = options.type ?? defaultType(options.status);
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }

  /** The OpenAI-shaped JSON body for this error. */
  toJSON(): OpenAIErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

/** Body of every error response (and of the mid-stream SSE error event). */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

// OpenAI itself answers 401 and 404 with `invalid_request_error`; clients key on `code`.
function defaultType(status: number): OpenAIErrorType {
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}
