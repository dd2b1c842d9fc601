import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from './config.js';

/**
 * Read the shared secret, creating it (random, mode 0600) when the file does not exist.
 * A secret readable by others is refused: anyone who reads it can pose as a worker.
 */
export function loadOrCreateSecret(path: string): string {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
    stat = statSync(path);
  }
  if ((stat.mode & 0o077) !== 0) {
    throw new ConfigError(
      `secret file ${path} is readable by other users (mode ${(stat.mode & 0o777).toString(8)}): run chmod 600 ${path}`,
      'secretFile',
    );
  }
  const secret = readFileSync(path, 'utf8').trim();
  if (secret.length < 16) {
    throw new ConfigError(
      `secret file ${path} holds fewer than 16 characters: delete it to have a new one made`,
      'secretFile',
    );
  }
  return secret;
}
