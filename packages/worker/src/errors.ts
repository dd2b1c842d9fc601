import { EsError } from '@es/protocol';

/** Machine-readable codes of {@link WorkerError}. */
export type WorkerErrorCode =
  'invalid_option' | 'invalid_extra_args' | 'registration_failed' | 'engine_guard_missing';

/**
 * The one error class of `@es/worker`. `param` names the option to fix for `invalid_option`
 * and `invalid_extra_args`.
 */
export class WorkerError extends EsError<WorkerErrorCode> {
  override readonly name = 'WorkerError';
}
