/**
 * The state file of `stateFile`: the pending and running jobs a provider hands to the next
 * provider with the same file. Written whole and renamed into place, read back on adoption.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { JobState, NodeRequest } from '@es/pool';
import { ENDED } from './job.js';
import type { LocalJob } from './job.js';

/** What the state file keeps of a job. */
export interface SavedJob {
  id: string;
  key: string;
  request: NodeRequest;
  state: JobState;
  submitTime: number;
  startTime?: number;
  node?: number;
  pgid?: number;
}

/** The state file's content. */
export interface SavedState {
  nextId: number;
  jobs: SavedJob[];
}

/** Write the jobs that have not ended, and the next job id, to `file`. */
export function writeStateFile(file: string, nextId: number, jobs: Iterable<LocalJob>): void {
  const saved: SavedJob[] = [];
  for (const job of jobs) {
    if (ENDED.has(job.state)) continue;
    const entry: SavedJob = {
      id: job.id,
      key: job.key,
      request: job.request,
      state: job.state,
      submitTime: job.submitTime,
    };
    if (job.startTime !== undefined) entry.startTime = job.startTime;
    if (job.node !== undefined) entry.node = job.node;
    if (job.pgid !== undefined) entry.pgid = job.pgid;
    saved.push(entry);
  }
  const body = JSON.stringify({ nextId, jobs: saved }, null, 2);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  // Write-then-rename: a crash mid-write must not leave a truncated file to adopt from.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, body, { mode: 0o600 });
  renameSync(tmp, file);
}

/** Read a state file written by {@link writeStateFile}. */
export function readStateFile(file: string): SavedState {
  return JSON.parse(readFileSync(file, 'utf8')) as SavedState;
}
