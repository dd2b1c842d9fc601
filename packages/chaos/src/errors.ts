import { EsError } from '@es/protocol';

/** Codes of {@link ChaosError}. */
export type ChaosErrorCode = 'not_found' | 'timeout' | 'start_failed' | 'bad_history';

/** The one error class of `@es/chaos`: a fault could not be injected or a process not started. */
export class ChaosError extends EsError<ChaosErrorCode> {
  override readonly name = 'ChaosError';
}
