import { isSecretFileError, loadOrCreateSecret as loadOrCreate } from '@es/protocol';
import { ConfigError } from './config.js';

/**
 * The scheduler's shared secret under the one secret policy of `@es/protocol`: created
 * (random, 0600) when missing; refused when another user owns it, group or others can read
 * it, or it is shorter than 16 characters. A refusal is a `ConfigError` on `secretFile`.
 */
export function loadOrCreateSecret(path: string): string {
  try {
    return loadOrCreate(path);
  } catch (error) {
    if (isSecretFileError(error)) throw new ConfigError(error.message, 'secretFile');
    throw error;
  }
}
