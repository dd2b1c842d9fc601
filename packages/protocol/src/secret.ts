/**
 * The shared secret file, one policy for both sides: the scheduler creates it (random,
 * mode 0600, in an owner-only directory when it makes the directory) and both the
 * scheduler and its workers read it only when it is a regular file owned by the current
 * user and unreadable by anyone else. Trust is same-user (like munge): whoever reads the
 * secret can pose as a worker, an engine's client or an admin.
 *
 * The same policy covers the files of client and admin keys ({@link readKeyFile}) and,
 * for directories, the log directory ({@link ensurePrivateDir}): owned by this user,
 * nothing for group or others.
 */
import { ProtocolError } from './errors.js';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** The shortest secret the scheduler accepts as its own (it makes 64 characters). */
export const MIN_SCHEDULER_SECRET_LENGTH = 16;

/** Why a secret file was refused. */
export type SecretFileErrorCode =
  /** It does not exist or cannot be read (`cause` says why). */
  | 'unreadable'
  /** It is a directory or another non-regular file. */
  | 'not_a_file'
  /** Another user owns it. */
  | 'wrong_owner'
  /** Group or others may read or write it. */
  | 'too_open'
  /** It holds nothing, or fewer characters than asked for. */
  | 'too_short';

/** A secret file the policy refuses; the message names the file and the fix. */
export class SecretFileError extends ProtocolError<SecretFileErrorCode> {
  override readonly name = 'SecretFileError';
  constructor(
    code: SecretFileErrorCode,
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Whether `error` is a {@link SecretFileError}. */
export function isSecretFileError(error: unknown): error is SecretFileError {
  return error instanceof SecretFileError;
}

/** Options of {@link readSecret}. */
export interface ReadSecretOptions {
  /** Fewest characters (after trimming) accepted (default 1: not empty). */
  minLength?: number;
}

function currentUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/** The policy's checks on a file's metadata (`what`: "secret file", "key file"); throws the refusal. */
function checkStats(file: string, stat: Stats, what = 'secret file'): void {
  if (!stat.isFile()) {
    throw new SecretFileError(
      'not_a_file',
      file,
      what === 'secret file'
        ? `secret file ${file} is not a regular file: pass the file the scheduler created`
        : `${what} ${file} is not a regular file: pass a file with one key per line`,
    );
  }
  const uid = currentUid();
  if (uid !== undefined && stat.uid !== uid) {
    throw new SecretFileError(
      'wrong_owner',
      file,
      `${what} ${file} belongs to uid ${stat.uid}, not to this user (uid ${uid}): ` +
        (what === 'secret file'
          ? 'the scheduler and its workers must run as the same user; run as its owner, or give this user a secret of its own'
          : `another user could change it; copy it to a file of your own (install -m 600 ${file} <new file>) and pass that`),
    );
  }
  if ((stat.mode & 0o077) !== 0) {
    throw new SecretFileError(
      'too_open',
      file,
      `${what} ${file} is readable by other users (mode ${(stat.mode & 0o777).toString(8)}): run chmod 600 ${file}`,
    );
  }
}

/**
 * Read the shared secret (trimmed), refusing a file that is not a regular file, belongs to
 * another user, is open to group or others, or is empty.
 * @throws {SecretFileError} whose message names the file and the fix.
 * @example
 * const { workerKey } = deriveKeys(readSecret(process.env.ES_SECRET_FILE));
 */
export function readSecret(file: string, options: ReadSecretOptions = {}): string {
  let secret: string;
  try {
    checkStats(file, statSync(file));
    secret = readFileSync(file, 'utf8').trim();
  } catch (error) {
    if (error instanceof SecretFileError) throw error;
    throw new SecretFileError(
      'unreadable',
      file,
      `secret file ${file} cannot be read (${(error as Error).message}): pass the scheduler's secret file (it creates <log dir>/secret)`,
      { cause: error },
    );
  }
  const minLength = options.minLength ?? 1;
  if (secret.length < minLength) {
    throw new SecretFileError(
      'too_short',
      file,
      secret === ''
        ? `secret file ${file} is empty: pass the file the scheduler created, or delete it to have the scheduler make a new one`
        : `secret file ${file} holds fewer than ${minLength} characters: delete it to have a new one made`,
    );
  }
  return secret;
}

/**
 * The scheduler's side: create the secret when the file does not exist (64 random hex
 * characters, mode 0600; a missing directory is made owner-only, 0700), then read it with
 * {@link readSecret}, asking for at least {@link MIN_SCHEDULER_SECRET_LENGTH} characters.
 * @throws {SecretFileError} when the existing file is refused.
 */
export function loadOrCreateSecret(file: string): string {
  let exists = true;
  try {
    statSync(file);
  } catch {
    exists = false;
  }
  if (!exists) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    try {
      // `wx`: never overwrite a secret another scheduler wrote in the meantime.
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
      chmodSync(file, 0o600); // whatever the umask
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new SecretFileError(
          'unreadable',
          file,
          `secret file ${file} cannot be created (${(error as Error).message}): pass --secret-file in a directory this user can write`,
          { cause: error },
        );
      }
    }
  }
  return readSecret(file, { minLength: MIN_SCHEDULER_SECRET_LENGTH });
}

/**
 * Read a file of keys (client API keys, an admin key) under the secret file's policy: a
 * regular file owned by this user with no permission for group or others (0600). One key
 * per line; surrounding blanks, blank lines and lines starting with `#` are ignored.
 * @throws {SecretFileError} naming the file and the fix: refused, unreadable, or no key in it.
 * @example
 * const apiKeys = readKeyFile('/home/me/.config/es/api-keys'); // ['k1', 'k2']
 */
export function readKeyFile(file: string): string[] {
  let text: string;
  try {
    checkStats(file, statSync(file), 'key file');
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof SecretFileError) throw error;
    throw new SecretFileError(
      'unreadable',
      file,
      `key file ${file} cannot be read (${(error as Error).message}): pass an existing file (mode 600) with one key per line`,
      { cause: error },
    );
  }
  const keys = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (keys.length === 0) {
    throw new SecretFileError(
      'too_short',
      file,
      `key file ${file} holds no key: write one key per line (blank lines and # comments are ignored)`,
    );
  }
  return keys;
}

/** Why a directory that must be owner-only (the log directory) was refused. */
export type PrivateDirErrorCode =
  /** It cannot be created or examined (`cause` says why). */
  | 'unusable'
  /** It exists and is not a directory. */
  | 'not_a_directory'
  /** Another user owns it. */
  | 'wrong_owner'
  /** Group or others have some permission on it. */
  | 'too_open';

/** An owner-only directory the policy refuses; the message names the flag, the directory and the fix. */
export class PrivateDirError extends ProtocolError<PrivateDirErrorCode> {
  override readonly name = 'PrivateDirError';
  constructor(
    code: PrivateDirErrorCode,
    readonly dir: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Whether `error` is a {@link PrivateDirError}. */
export function isPrivateDirError(error: unknown): error is PrivateDirError {
  return error instanceof PrivateDirError;
}

/** Options of {@link ensurePrivateDir}. */
export interface EnsurePrivateDirOptions {
  /** The flag that names the directory, for the message (default `--log-dir`). */
  flag?: string;
}

/**
 * Make `dir` (and its missing parents) owner-only, mode 0700, or check the one that exists:
 * it must be a directory owned by this user with no permission for group or others. Other
 * users of a cluster must neither read what is in it (logs, the secret, job scripts) nor
 * swap a file in it (a `.sbatch` before sbatch reads it). Symbolic links are followed: the
 * directory they lead to is checked.
 * @returns the absolute path of the directory.
 * @throws {PrivateDirError} naming the flag, the directory, the mode or owner found and the fix.
 * @example
 * ensurePrivateDir('logs', { flag: '--log-dir' }); // '/home/me/es/logs', mode 0700
 */
export function ensurePrivateDir(dir: string, options: EnsurePrivateDirOptions = {}): string {
  const flag = options.flag ?? '--log-dir';
  const path = resolve(dir);
  const named = dir === path ? path : `${dir} (${path})`;
  let stat: Stats;
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
    stat = statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new PrivateDirError(
        'not_a_directory',
        path,
        `${flag} ${named} is not a directory: pass another ${flag}`,
        { cause: error },
      );
    }
    throw new PrivateDirError(
      'unusable',
      path,
      `${flag} ${named} cannot be created (${(error as Error).message}): pass a ${flag} this user can create`,
      { cause: error },
    );
  }
  if (!stat.isDirectory()) {
    throw new PrivateDirError(
      'not_a_directory',
      path,
      `${flag} ${named} is not a directory: pass another ${flag}`,
    );
  }
  const uid = currentUid();
  if (uid !== undefined && stat.uid !== uid) {
    throw new PrivateDirError(
      'wrong_owner',
      path,
      `${flag} ${named} belongs to uid ${stat.uid}, not to this user (uid ${uid}): another user could read or replace ` +
        `the logs, job scripts and secret in it; pass a ${flag} of your own`,
    );
  }
  if ((stat.mode & 0o077) !== 0) {
    throw new PrivateDirError(
      'too_open',
      path,
      `${flag} ${named} is open to other users (mode ${(stat.mode & 0o777).toString(8)}): ` +
        `run chmod 700 ${path}, or pass another ${flag}`,
    );
  }
  return path;
}
