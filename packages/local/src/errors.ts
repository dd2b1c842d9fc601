import { ProviderError } from '@es/pool';
import type { FailureKind } from '@es/pool';

/** Every `code` a {@link LocalProviderError} can carry. */
export type LocalProviderErrorCode =
  /** A provider option is invalid (no nodes); `param` names it. Permanent. */
  | 'invalid_config'
  /** The provider cannot run the request (more GPUs than a node has, an empty command). Permanent. */
  | 'unsatisfiable'
  /** The provider was used after `close()`. Permanent. */
  | 'closed';

/** Fields of a {@link LocalProviderError}. */
export interface LocalProviderErrorOptions {
  kind: FailureKind;
  /** The option or request field the error is about (`gpusPerNode`, `command`, `nodes`). */
  param?: string;
  cause?: unknown;
}

/**
 * The one error class of `@es/local`, a `ProviderError` of `@es/pool`: `isProviderError`
 * and `classifyProviderError` understand it. Never ambiguous: nothing happened.
 * @example
 * try {
 *   await provider.submit(request);
 * } catch (error) {
 *   if (error instanceof LocalProviderError && error.code === 'unsatisfiable') {
 *     console.error(`${error.param}: ${error.message}`);
 *   }
 * }
 */
export class LocalProviderError extends ProviderError<LocalProviderErrorCode> {
  override readonly name = 'LocalProviderError';

  constructor(code: LocalProviderErrorCode, message: string, options: LocalProviderErrorOptions) {
    super(code, message, { ...options, ambiguous: false });
  }
}
