/** Error codes of the admin API. */
export type AdminErrorCode =
  | 'unauthorized'
  | 'bad_request'
  | 'unknown_deployment'
  | 'unknown_worker'
  | 'unknown_job'
  | 'no_log'
  | 'not_ready';

const STATUS: Record<AdminErrorCode, number> = {
  unauthorized: 401,
  bad_request: 400,
  unknown_deployment: 404,
  unknown_worker: 404,
  unknown_job: 404,
  no_log: 404,
  not_ready: 503,
};

/** Every failure of `@es/admin`; the API answers it as `{"error": {message, type, param, code}}`. */
export class AdminError extends Error {
  override readonly name = 'AdminError';
  readonly code: AdminErrorCode;
  readonly status: number;
  readonly param: string | null;

  constructor(
    code: AdminErrorCode,
    message: string,
    options: { param?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = STATUS[code];
    this.param = options.param ?? null;
  }
}
