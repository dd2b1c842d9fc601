import { EsError } from '@es/protocol';

export type { OpenAIErrorBody, OpenAIErrorType } from '@es/protocol';

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
  /** Request field the error is about (`model`, ...). */
  param?: string;
  /** Extra response headers (e.g. `Retry-After`). */
  headers?: Record<string, string>;
  cause?: unknown;
}

/**
 * The one error class of `@es/proxy`. Every failure that reaches a client becomes the one
 * OpenAI-shaped body (`openAIErrorBody` of `@es/protocol`) built from it.
 * @example
 * throw new ProxyError('missing_model', 'you must provide a model parameter', { status: 400, param: 'model' });
 */
export class ProxyError extends EsError<ProxyErrorCode> {
  override readonly name = 'ProxyError';
  declare readonly status: number;
  readonly headers: Record<string, string>;

  constructor(code: ProxyErrorCode, message: string, options: ProxyErrorOptions) {
    super(code, message, options);
    this.headers = options.headers ?? {};
  }
}
