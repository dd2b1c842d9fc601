/**
 * Where the scheduler is and which admin key to use, from flags, the environment and the
 * files the scheduler writes in its log directory (`scheduler-url`, `secret`).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  deriveKeys,
  isHttpUrl,
  isSecretFileError,
  readKeyFile,
  readSchedulerUrlSync,
  readSecret,
  schedulerUrlFilePath,
} from '@es/protocol';
import { DEFAULT_SCHEDULER_URL } from './client.js';
import { ClientError } from './errors.js';

/** The scheduler's URL and where it was found (said in errors). */
export interface SchedulerLocation {
  url: string;
  /** `--url`, an environment variable's name, a file's path, or `default`. */
  from: string;
}

/** What {@link locateScheduler} and {@link findAdminKey} read. */
export interface LocateInput {
  /** `--url` / `--scheduler-url`. */
  url?: string | undefined;
  /** `--admin-key`. */
  adminKey?: string | undefined;
  /** `--admin-key-file`: a file (0600, owned by this user) holding the admin key. */
  adminKeyFile?: string | undefined;
  /** `--secret-file`. */
  secretFile?: string | undefined;
  env: Record<string, string | undefined>;
  /** Directory relative paths start from (default the process's). */
  cwd?: string;
}

/** The scheduler's default log directory (`--log-dir logs`), relative to where it started. */
const DEFAULT_LOG_DIR = 'logs';

function checked(url: string, from: string): SchedulerLocation {
  if (!isHttpUrl(url)) {
    throw new ClientError(
      'bad_input',
      `${from}: expected the scheduler's http(s) URL such as http://login1:8780, got "${url}"`,
    );
  }
  return { url: url.replace(/\/+$/, ''), from };
}

/**
 * The scheduler's URL: `--url`, else `$ES_SCHEDULER_URL`, else the seed's
 * `$ELASTIC_SERVING_URL`, else the `scheduler-url` file the scheduler writes in its log
 * directory (`$ES_LOG_DIR`, else `./logs`), else {@link DEFAULT_SCHEDULER_URL}.
 * @throws {ClientError} `bad_input` for a value that is not an http(s) URL; `unreachable`
 *   when `$ES_LOG_DIR` names a directory without a URL file (its scheduler is not serving).
 * @example
 * const { url } = locateScheduler({ env: process.env });
 */
export function locateScheduler(input: LocateInput): SchedulerLocation {
  const { env } = input;
  if (input.url) return checked(input.url, '--url');
  for (const name of ['ES_SCHEDULER_URL', 'ELASTIC_SERVING_URL']) {
    const value = env[name];
    if (value) return checked(value, name);
  }
  const cwd = input.cwd ?? process.cwd();
  const logDir = env.ES_LOG_DIR ? resolve(cwd, env.ES_LOG_DIR) : undefined;
  const file = schedulerUrlFilePath(logDir ?? resolve(cwd, DEFAULT_LOG_DIR));
  const read = readSchedulerUrlSync(file);
  if (read.kind === 'url') return { url: read.url.replace(/\/+$/, ''), from: file };
  if (read.kind === 'invalid') {
    throw new ClientError(
      'bad_input',
      `${file}: its first line "${read.text}" is not an http(s) URL: pass --url or ES_SCHEDULER_URL`,
    );
  }
  if (logDir !== undefined) {
    throw new ClientError(
      'unreachable',
      `no scheduler URL in ${file} (ES_LOG_DIR=${env.ES_LOG_DIR}): the scheduler writes it while it serves and removes it when it stops. Is it running with --log-dir ${logDir}? Else pass --url or ES_SCHEDULER_URL`,
    );
  }
  return { url: DEFAULT_SCHEDULER_URL, from: 'default' };
}

/** An admin key and whether the user gave it (`--admin-key`, `ES_ADMIN_KEY`, a secret file). */
export interface FoundAdminKey {
  key: string;
  /** False when it was derived from a secret file found by itself (it may be another scheduler's). */
  explicit: boolean;
  from: string;
}

/**
 * The first key of a key file given as `flag` (0600, owned by this user; blank lines and
 * `#` comments ignored), relative to `cwd`.
 * @throws {ClientError} `bad_input` naming the flag, the file and the fix.
 */
export function keyFromFile(file: string, flag: string, cwd = process.cwd()): string {
  try {
    return readKeyFile(resolve(cwd, file))[0] as string;
  } catch (error) {
    if (!isSecretFileError(error)) throw error;
    throw new ClientError('bad_input', `${flag}: ${error.message}`, { cause: error });
  }
}

/**
 * The admin key: `--admin-key`, else the key in `--admin-key-file`, else `$ES_ADMIN_KEY`,
 * else derived from `--secret-file`
 * (or `$ES_SECRET_FILE`), else from `secret` in the log directory (`$ES_LOG_DIR`, else
 * `./logs`) when it exists: whoever can read the scheduler's secret file is its admin.
 * Undefined when there is none (the public view needs none).
 * @throws {ClientError} `bad_input` when a named secret file cannot be read.
 */
export function findAdminKey(input: LocateInput): FoundAdminKey | undefined {
  const { env } = input;
  const cwd = input.cwd ?? process.cwd();
  if (input.adminKey) return { key: input.adminKey, explicit: true, from: '--admin-key' };
  if (input.adminKeyFile) {
    const key = keyFromFile(input.adminKeyFile, '--admin-key-file', cwd);
    return { key, explicit: true, from: resolve(cwd, input.adminKeyFile) };
  }
  if (env.ES_ADMIN_KEY) return { key: env.ES_ADMIN_KEY, explicit: true, from: 'ES_ADMIN_KEY' };
  const named = input.secretFile ?? env.ES_SECRET_FILE;
  const file = named
    ? resolve(cwd, named)
    : join(resolve(cwd, env.ES_LOG_DIR || DEFAULT_LOG_DIR), 'secret');
  if (!named && !existsSync(file)) return undefined;
  try {
    // Same policy (a regular file of this user's, mode 600) and derivation as the scheduler:
    // a secret others can read or write is nobody's proof of being the admin.
    return {
      key: deriveKeys(readSecret(file)).adminToken,
      explicit: named !== undefined,
      from: file,
    };
  } catch (error) {
    const why = isSecretFileError(error) ? error.message : `cannot read the secret file ${file}`;
    throw new ClientError('bad_input', `${why} (or pass --admin-key or ES_ADMIN_KEY instead)`, {
      cause: error,
    });
  }
}
