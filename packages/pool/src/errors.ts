import { EsError } from '@es/protocol';

/** Machine-readable codes of every error `@es/pool` produces. */
export type PoolErrorCode =
  /** The worker token was missing or wrong (HTTP 401). */
  | 'unauthorized'
  /** A request body failed validation (HTTP 400); `param` names the field. */
  | 'invalid_request'
  /** A register named a deployment this scheduler does not serve (HTTP 404). */
  | 'unknown_deployment'
  /** A heartbeat, drain or deregister named a worker the registry does not hold (HTTP 404: register again). */
  | 'unknown_worker'
  /** An operator named a job no worker of which registered here (HTTP 404). */
  | 'unknown_job'
  /** A register or heartbeat came from an incarnation older than the newest seen, or ended (HTTP 409: exit). */
  | 'fenced'
  /** A deployment or provider option is invalid; `param` names it. */
  | 'invalid_config'
  /** The local provider cannot satisfy a node request (more GPUs than a node has). */
  | 'unsatisfiable'
  /** A provider or reconciler was used after `close()`/`stop()`. */
  | 'closed';

/** Options of {@link PoolError}. */
export interface PoolErrorOptions {
  /** HTTP status when the error reaches the worker protocol's edge (default from the code). */
  status?: number;
  /** Field the error is about (`restartCount`, `deployments[0].maxNodes`, ...). */
  param?: string;
  /** Job the error is about. */
  jobId?: string;
  /** Worker the error is about. */
  workerId?: string;
  cause?: unknown;
}

const STATUS: Record<PoolErrorCode, number> = {
  unauthorized: 401,
  invalid_request: 400,
  unknown_deployment: 404,
  unknown_worker: 404,
  unknown_job: 404,
  fenced: 409,
  invalid_config: 500,
  unsatisfiable: 400,
  closed: 503,
};

/**
 * The one error class of `@es/pool`. Worker-protocol failures carry the HTTP status the
 * worker sees (404: register again, 409: exit).
 * @example
 * throw new PoolError('fenced', 'job 42 restarted (restart count 2 > 1)', { jobId: '42' });
 */
export class PoolError extends EsError<PoolErrorCode> {
  override readonly name = 'PoolError';
  declare readonly status: number;
  readonly jobId: string | undefined;
  readonly workerId: string | undefined;

  constructor(code: PoolErrorCode, message: string, options: PoolErrorOptions = {}) {
    super(code, message, { ...options, status: options.status ?? STATUS[code] });
    this.jobId = options.jobId;
    this.workerId = options.workerId;
  }
}
