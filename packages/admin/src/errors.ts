import { PoolError, type PoolErrorCode } from '@es/pool';
import { EsError } from '@es/protocol';

/** Error codes of the admin API. */
export type AdminErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'bad_request'
  | 'too_large'
  | 'unknown_deployment'
  | 'unknown_worker'
  | 'unknown_job'
  | 'no_log'
  | 'not_ready';

const STATUS: Record<AdminErrorCode, number> = {
  unauthorized: 401,
  forbidden: 403,
  bad_request: 400,
  too_large: 413,
  unknown_deployment: 404,
  unknown_worker: 404,
  unknown_job: 404,
  no_log: 404,
  not_ready: 503,
};

/** Every failure of `@es/admin`; the API answers it as `{"error": {message, type, param, code}}`. */
export class AdminError extends EsError<AdminErrorCode> {
  override readonly name = 'AdminError';
  declare readonly status: number;

  constructor(
    code: AdminErrorCode,
    message: string,
    options: { param?: string; cause?: unknown } = {},
  ) {
    super(code, message, { ...options, status: STATUS[code] });
  }
}

/** The admin codes of the refusals a `PoolOperator` throws (`PoolError` codes). */
const FROM_OPERATOR: Partial<Record<PoolErrorCode, AdminErrorCode>> = {
  unknown_deployment: 'unknown_deployment',
  unknown_worker: 'unknown_worker',
  unknown_job: 'unknown_job',
  invalid_request: 'bad_request',
};

/**
 * An operator's refusal as the admin API answers it: same message, the admin code, and the
 * route's own name of the parameter (`params` maps the operator's, e.g. `{ jobId: 'id' }`).
 * Anything else is returned as it is (a 500).
 */
export function fromOperatorError(error: unknown, params: Record<string, string>): unknown {
  if (!(error instanceof PoolError)) return error;
  const code = FROM_OPERATOR[error.code];
  if (code === undefined) return error;
  const param = error.param === undefined ? undefined : (params[error.param] ?? error.param);
  return new AdminError(code, error.message, {
    ...(param === undefined ? {} : { param }),
    cause: error,
  });
}
