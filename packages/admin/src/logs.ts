import { open, readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { PoolReadModel } from '@es/pool';
import type { LogsResponse } from '@es/client';
import { AdminError } from './errors.js';

const SAFE_ID = /^[\w.+-]+$/;
const MAX_BYTES = 1024 * 1024;

/** What a log file the scheduler serves is named: an engine log or a job's batch output. */
const ENGINE_LOG = /^engine-[\w.+-]+\.\d+\.\d+\.log$/;
const JOB_LOG = /^[\w.+-]+-[\w.+-]+\.(?:out|err)$/;

/**
 * `file` when it is one of the files the scheduler's workers and jobs create: its real path
 * (symbolic links resolved) directly in the real log directory, named as `pattern` says (an
 * engine log `engine-<job>.<restart>.<index>.log`, a job log `<job name>-<job id>.out|.err`).
 * Anything else (a worker that registered `/etc/hostname`, a link out of the directory) is
 * refused: `es logs` is no way to read other files as the scheduler's user.
 */
async function servedLogFile(
  file: string,
  logDir: string,
  pattern: RegExp,
  what: string,
): Promise<string> {
  const refuse = (why: string, cause?: unknown) =>
    new AdminError(
      'forbidden',
      `${what} ${file} ${why}: es logs serves only engine-<job>.<restart>.<index>.log and <job name>-<job id>.out/.err files in the scheduler's log directory ${logDir}`,
      { param: 'id', ...(cause === undefined ? {} : { cause }) },
    );
  let real: string;
  let realDir: string;
  try {
    realDir = await realpath(logDir);
  } catch (error) {
    throw new AdminError('no_log', `cannot read the log directory ${logDir}`, { cause: error });
  }
  try {
    real = await realpath(file);
  } catch (error) {
    // Not written yet, or on a disk this machine does not see: nothing to serve, but say so
    // only for a file that would be served.
    if (![logDir, realDir].includes(dirname(file))) {
      throw refuse('is outside the log directory', error);
    }
    if (!pattern.test(basename(file))) throw refuse('is not a log file of a worker or job', error);
    throw new AdminError(
      'no_log',
      `log file ${file} is not readable here (is it on another node?)`,
      {
        param: 'id',
        cause: error,
      },
    );
  }
  if (dirname(real) !== realDir) {
    throw refuse(
      real === file
        ? 'is outside the log directory'
        : `leads to ${real}, outside the log directory`,
    );
  }
  if (!pattern.test(basename(file)) || !pattern.test(basename(real))) {
    throw refuse(
      real === file
        ? 'is not a log file of a worker or job'
        : `leads to ${real}, not a log file of a worker or job`,
    );
  }
  return real;
}

/**
 * The log file of a worker (the engine log it registered) or of a job (its batch output
 * `<job name>-<job id>.out` in the scheduler's log directory), as its real path. Only the
 * files the scheduler's workers and jobs create directly in `logDir` are served.
 * @throws {AdminError} `bad_request` for an id that is not one, `no_log` when there is no
 *   such log, `forbidden` for a registered file that is not an engine log in `logDir`.
 */
export async function findLogFile(
  workers: Pick<PoolReadModel, 'worker'>,
  logDir: string,
  id: string,
): Promise<string> {
  if (!SAFE_ID.test(id)) {
    throw new AdminError('bad_request', `not a job or worker id: ${id}`, { param: 'id' });
  }
  const worker = workers.worker(id);
  if (worker !== undefined) {
    if (worker.logFile === undefined) {
      throw new AdminError('no_log', `worker ${id} did not report a log file`, { param: 'id' });
    }
    return servedLogFile(worker.logFile, logDir, ENGINE_LOG, `the log file of worker ${id}`);
  }
  let names: string[];
  try {
    names = await readdir(logDir);
  } catch (error) {
    throw new AdminError('no_log', `cannot read the log directory ${logDir}`, { cause: error });
  }
  // The job id is the last dash-separated part: never match job 12 for 112.
  const match =
    names.find((n) => n.endsWith(`-${id}.out`)) ?? names.find((n) => n.endsWith(`-${id}.err`));
  if (match === undefined) {
    throw new AdminError(
      'no_log',
      `no worker ${id} and no job log *-${id}.out in ${logDir}: see \`es workers\` / \`es jobs\` for ids`,
      { param: 'id' },
    );
  }
  return servedLogFile(join(logDir, match), logDir, JOB_LOG, `the log of job ${id}`);
}

/** Read `file` from `since` (a previous offset), or its last `bytes` bytes. */
export async function tailFile(
  file: string,
  options: { since?: number; bytes?: number } = {},
): Promise<LogsResponse> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch (error) {
    throw new AdminError(
      'no_log',
      `log file ${file} is not readable here (is it on another node?)`,
      {
        cause: error,
      },
    );
  }
  const want = Math.min(Math.max(1, options.bytes ?? 64 * 1024), MAX_BYTES);
  // A file that shrank (rotated, truncated) is read again from its start.
  let from = options.since !== undefined && options.since <= size ? options.since : size - want;
  from = Math.max(0, from);
  const length = Math.min(size - from, MAX_BYTES);
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, from);
    return { file, offset: from + bytesRead, text: buffer.subarray(0, bytesRead).toString('utf8') };
  } finally {
    await handle.close();
  }
}
