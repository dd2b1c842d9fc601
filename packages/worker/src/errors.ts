import { EsError } from '@es/protocol';

/** Machine-readable codes of {@link WorkerError}. */
export type WorkerErrorCode =
  'INVALID_OPTION' | 'INVALID_EXTRA_ARGS' | 'REGISTRATION_FAILED' | 'ENGINE_GUARD_MISSING';

/**
 * The one error class of `@es/worker`. `param` names the option to fix for `INVALID_OPTION`
 * and `INVALID_EXTRA_ARGS`.
 */
export class WorkerError extends EsError<WorkerErrorCode> {
  override readonly name = 'WorkerError';
}
