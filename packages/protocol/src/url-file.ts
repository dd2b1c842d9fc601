/**
 * The scheduler-URL files: the scheduler writes its current client URL to
 * `<log dir>/scheduler-url` (the `es` CLI finds it there) and the URL of its worker listener
 * to `<log dir>/worker-url` (`ES_SCHEDULER_URL_FILE` in a worker's environment); a worker that
 * cannot reach the scheduler re-reads its file and follows a new URL, so a scheduler requeued
 * to another node or restarted on another port finds its workers again.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Name of the file in the scheduler's log directory. */
export const SCHEDULER_URL_FILE_NAME = 'scheduler-url';

/** `<logDir>/scheduler-url`. */
export function schedulerUrlFilePath(logDir: string): string {
  return join(logDir, SCHEDULER_URL_FILE_NAME);
}

/** Name of the workers' file in the scheduler's log directory. */
export const WORKER_URL_FILE_NAME = 'worker-url';

/** `<logDir>/worker-url`: where the workers find the scheduler's worker listener. */
export function workerUrlFilePath(logDir: string): string {
  return join(logDir, WORKER_URL_FILE_NAME);
}

/** True for an absolute `http:` or `https:` URL (a scheduler address). */
export function isHttpUrl(text: string): boolean {
  try {
    const { protocol } = new URL(text);
    return protocol === 'http:' || protocol === 'https:';
  } catch {
    return false;
  }
}

/**
 * What the file says:
 * - `url`: its first line, an http(s) URL;
 * - `missing`: it does not exist, cannot be read or is empty (the scheduler is not serving);
 * - `invalid`: its first line is not an http(s) URL (`text` is that line).
 */
export type SchedulerUrlRead =
  { kind: 'url'; url: string } | { kind: 'missing' } | { kind: 'invalid'; text: string };

function parse(content: string): SchedulerUrlRead {
  const line = content.split('\n')[0]?.trim() ?? '';
  if (line === '') return { kind: 'missing' };
  return isHttpUrl(line) ? { kind: 'url', url: line } : { kind: 'invalid', text: line };
}

/**
 * Read the scheduler's current URL from the file.
 * @example
 * const read = await readSchedulerUrl(file);
 * if (read.kind === 'url' && read.url !== current) follow(read.url);
 */
export async function readSchedulerUrl(file: string): Promise<SchedulerUrlRead> {
  try {
    return parse(await readFile(file, 'utf8'));
  } catch {
    return { kind: 'missing' };
  }
}

/** {@link readSchedulerUrl}, synchronously (start-up, before anything runs). */
export function readSchedulerUrlSync(file: string): SchedulerUrlRead {
  try {
    return parse(readFileSync(file, 'utf8'));
  } catch {
    return { kind: 'missing' };
  }
}

/**
 * Write `url` to the file atomically (a temporary file renamed over it): a worker reading
 * at the same moment sees the old URL or the new one, never a part.
 * @throws {TypeError} when `url` is not an http(s) URL; the file system's errors.
 */
export function writeSchedulerUrl(file: string, url: string): void {
  if (!isHttpUrl(url)) throw new TypeError(`not an http(s) URL: "${url}"`);
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${url}\n`);
  try {
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * Remove the file when it still names `url` (a stale URL would send workers and users to
 * a scheduler that is gone; a newer scheduler's URL stays). True when removed.
 */
export function removeSchedulerUrl(file: string, url: string): boolean {
  const read = readSchedulerUrlSync(file);
  if (read.kind !== 'url' || read.url !== url) return false;
  try {
    rmSync(file);
    return true;
  } catch {
    return false;
  }
}
