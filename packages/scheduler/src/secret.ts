import {
  ensurePrivateDir,
  isPrivateDirError,
  isSecretFileError,
  loadOrCreateSecret as loadOrCreate,
} from '@es/protocol';
import { ConfigError } from './settings.js';

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

/**
 * The log directory (`--log-dir`), absolute: created owner-only (0700) when missing; an
 * existing one open to group or others, or owned by another user, is refused with a
 * `ConfigError` on `logDir` naming the directory, what was found and the fix.
 */
export function ensureLogDir(dir: string): string {
  try {
    return ensurePrivateDir(dir, { flag: '--log-dir' });
  } catch (error) {
    if (isPrivateDirError(error)) throw new ConfigError(`${error.message} (log_dir)`, 'logDir');
    throw error;
  }
}
