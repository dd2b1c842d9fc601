/**
 * Fault injectors that act on real processes: find an engine behind its worker's front
 * port, a worker by its SLURM job, and kill them. Parsing is pure; the rest is a thin layer over `ss` and /proc.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { execa } from 'execa';
import { ChaosError } from './errors.js';

/** Pids in `ss -ltnpH` output (`users:(("node",pid=123,fd=20))`). */
export function parseSsPids(text: string): number[] {
  const pids = new Set<number>();
  for (const match of text.matchAll(/pid=(\d+)/g)) pids.add(Number(match[1]));
  return [...pids];
}

/** Pids of the processes listening on TCP `port` on this machine. */
export async function pidsListeningOn(port: number): Promise<number[]> {
  const result = await execa('ss', ['-ltnpH', `sport = :${port}`], { reject: false });
  return parseSsPids(String(result.stdout));
}

function readProc(pid: string, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Pids whose command line contains `needle` and whose environment has `SLURM_JOB_ID=jobId`
 * (a worker started by srun in that job, for example `needle = 'worker/dist/cli.mjs'`).
 */
export function pidsOfJob(jobId: string, needle: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = readProc(pid, 'cmdline');
    if (cmdline === undefined || !cmdline.includes(needle)) continue;
    const environ = readProc(pid, 'environ') ?? '';
    if (environ.split('\0').includes(`SLURM_JOB_ID=${jobId}`)) out.push(Number(pid));
  }
  return out;
}

/** Resident memory of a process in bytes (VmRSS), undefined when it is gone. */
export function rssBytes(pid: number): number | undefined {
  const status = readProc(String(pid), 'status');
  const match = status && /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return match ? Number(match[1]) * 1024 : undefined;
}

/** True while process `pid` exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends `signal` to each pid; returns the ones that existed. */
export function killPids(pids: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): number[] {
  const hit: number[] = [];
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
      hit.push(pid);
    } catch {
      // Already gone: nothing to inject.
    }
  }
  return hit;
}

/** Parent pid of every process (from /proc/<pid>/stat). */
function parents(): Map<number, number> {
  const map = new Map<number, number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = readProc(pid, 'stat');
    if (stat === undefined) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    map.set(Number(pid), ppid);
  }
  return map;
}

/**
 * Pids of engine instance `index` behind the front listening on `port`: the worker holds
 * the port; the engine is the descendant of that worker whose command line names the
 * instance's Unix socket (`.../engine-<index>.sock`).
 */
export async function enginePidsBehind(port: number, index: number): Promise<number[]> {
  const fronts = await pidsListeningOn(port);
  if (fronts.length === 0) throw new ChaosError('not_found', `nothing listens on port ${port}`);
  const parentOf = parents();
  const descends = (pid: number): boolean => {
    for (let at = parentOf.get(pid); at !== undefined && at > 1; at = parentOf.get(at)) {
      if (fronts.includes(at)) return true;
    }
    return false;
  };
  const socket = `/engine-${index}.sock`;
  const engines = [...parentOf.keys()].filter(
    (pid) => descends(pid) && (readProc(String(pid), 'cmdline') ?? '').includes(socket),
  );
  if (engines.length === 0) {
    throw new ChaosError('not_found', `no engine ${index} behind the front on port ${port}`);
  }
  return engines;
}

/**
 * SIGKILLs engine instance `index` behind the front on `port` (the engine, not its worker).
 * @example
 * await killEngineBehind(8001, 0);
 */
export async function killEngineBehind(port: number, index: number): Promise<number[]> {
  return killPids(await enginePidsBehind(port, index), 'SIGKILL');
}

/**
 * Freezes engine instance `index` behind the front on `port` (SIGSTOP): its socket keeps
 * accepting connections in the kernel and nothing answers, as a hung engine does. `SIGCONT`
 * the returned pids to thaw it.
 */
export async function freezeEngineBehind(port: number, index: number): Promise<number[]> {
  return killPids(await enginePidsBehind(port, index), 'SIGSTOP');
}

/** SIGKILLs the worker daemon of SLURM job `jobId` (its engines are left orphaned, as after a crash). */
export function killWorkerOfJob(jobId: string, needle = 'worker/dist/cli.mjs'): number[] {
  const pids = pidsOfJob(jobId, needle);
  if (pids.length === 0) throw new ChaosError('not_found', `no worker process of job ${jobId}`);
  return killPids(pids, 'SIGKILL');
}
