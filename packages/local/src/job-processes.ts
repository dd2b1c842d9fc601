/**
 * The operating-system side of a local job: spawning its command as a detached process
 * group with its output file, telling whether an adopted group still runs it, and the
 * cgroup-like sweep that kills every process carrying the job's key (Linux /proc).
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeRequest } from '@es/pool';
import { isGroupAlive } from '@es/proc';
import { JOB_KEY_ENV } from './job.js';

/**
 * Start a job's command as the leader of a new process group, stdout and stderr appended to
 * `<logDir>/<name>-<id>.out`. Unref'd: the provider's owner decides when to exit. Throws
 * when the command is empty or the log file cannot be opened.
 */
export function spawnJob(request: NodeRequest, id: string, env: NodeJS.ProcessEnv): ChildProcess {
  const [file, ...args] = request.command;
  if (file === undefined) throw new Error('empty command');
  // Owner-only whatever the umask of the process using this library: a job's output
  // may show what its command was given.
  mkdirSync(request.logDir, { recursive: true, mode: 0o700 });
  const out = openSync(join(request.logDir, `${request.name}-${id}.out`), 'a', 0o600);
  try {
    const child = spawn(file, args, {
      env,
      cwd: process.cwd(),
      detached: true,
      stdio: ['ignore', out, out],
    });
    // The provider's owner decides when to exit; running jobs must not keep it alive.
    child.unref();
    return child;
  } finally {
    closeSync(out);
  }
}

/**
 * Whether the leader `pgid` still runs the job with marker `key`. The marker guards against
 * a recycled pid; without /proc (not Linux) a live group is taken at its word.
 */
export function runsJob(pgid: number, key: string): boolean {
  if (!isGroupAlive(pgid)) return false;
  try {
    const environ = readFileSync(`/proc/${pgid}/environ`, 'latin1');
    return `\0${environ}`.includes(`\0${JOB_KEY_ENV}=${key}\0`);
  } catch {
    return !existsSync('/proc/self');
  }
}

/**
 * SIGKILL every process whose environment carries the job's key, wherever its process
 * group: engines a worker started in their own groups would otherwise outlive the job,
 * which SLURM prevents with the job's cgroup. Linux only (/proc); elsewhere a no-op.
 */
export function killJobProcesses(key: string): void {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return;
  }
  const marker = `\0${JOB_KEY_ENV}=${key}\0`;
  for (const pid of pids) {
    let environ: string;
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone meanwhile, or another user's
    }
    if (!`\0${environ}`.includes(marker)) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // ESRCH: it exited meanwhile.
    }
  }
}
