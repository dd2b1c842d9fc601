import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PoolReadModel } from '@es/pool';
import type { LogsResponse } from '@es/client';
import { AdminError } from './errors.js';

const SAFE_ID = /^[\w.+-]+$/;
const MAX_BYTES = 1024 * 1024;

/**
 * The log file of a worker (the engine log it registered) or of a job (its batch output
 * `<job name>-<job id>.out` in the scheduler's log directory).
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
    return worker.logFile;
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
  return join(logDir, match);
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
