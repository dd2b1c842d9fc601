import { EsError } from '@es/protocol';

/** Codes of {@link ChaosError}. */
export type ChaosErrorCode = 'NOT_FOUND' | 'TIMEOUT' | 'START_FAILED' | 'BAD_HISTORY';

/** The one error class of `@es/chaos`: a fault could not be injected or a process not started. */
export class ChaosError extends EsError<ChaosErrorCode> {
  override readonly name = 'ChaosError';
}
