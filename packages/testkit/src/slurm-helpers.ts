import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { controllerPid, slurmEnv } from './dev-cluster.js';

/** Output of {@link runSlurm}. */
export interface SlurmRun {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs a SLURM command (`sbatch`, `squeue`, `scontrol`, ...) against the dev cluster with
 * a timeout (default 20 s). Never throws for a non-zero exit.
 */
export async function runSlurm(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<SlurmRun> {
  const result = await execa(command, args, {
    env: slurmEnv(),
    timeout: options.timeoutMs ?? 20_000,
    forceKillAfterDelay: 1_000,
    reject: false,
    stdin: 'ignore',
  });
  return {
    exitCode: result.exitCode,
    stdout: String(result.stdout),
    stderr: String(result.stderr),
    timedOut: result.timedOut,
  };
}

/** `scontrol show job -o <id>` as key/value pairs (`JobState`, `Reason`, `Restarts`, `NodeList`, ...). */
export type JobInfo = Record<string, string>;

/** Reads one job with `scontrol show job -o`; undefined when SLURM no longer knows it. */
export async function showJob(id: string): Promise<JobInfo | undefined> {
  const result = await runSlurm('scontrol', ['show', 'job', '-o', id]);
  if (result.exitCode !== 0) return undefined;
  const info: JobInfo = {};
  // Values may contain spaces (Command=, Comment=), so split on " Key=" boundaries.
  for (const match of result.stdout
    .trim()
    .matchAll(/(?:^|\s)([A-Za-z:/]+)=(.*?)(?=\s[A-Za-z:/]+=|$)/g)) {
    const [, key, value] = match;
    if (key !== undefined && !(key in info)) info[key] = value ?? '';
  }
  return info;
}

/**
 * Polls a job (every 250 ms) until `predicate` holds; rejects with the last state seen
 * after `timeoutMs`.
 */
export async function waitForJob(
  id: string,
  predicate: (job: JobInfo) => boolean,
  timeoutMs = 60_000,
): Promise<JobInfo> {
  const deadline = Date.now() + timeoutMs;
  let last: JobInfo | undefined;
  for (;;) {
    last = (await showJob(id)) ?? last;
    if (last && predicate(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(
        `job ${id} did not reach the expected state within ${timeoutMs} ms; last seen: ${JSON.stringify(
          last && {
            JobState: last.JobState,
            Reason: last.Reason,
            Restarts: last.Restarts,
            NodeList: last.NodeList,
          },
        )}`,
      );
    }
    await sleep(250);
  }
}

/**
 * Preempts whatever runs in partition `low` on `node`: submits a `high` job that needs all
 * 8 GPUs of that node and sleeps `seconds`. Resolves to the preempting job's id.
 */
export async function preempt(
  node: string,
  seconds: number,
  name = 'es-test-preempt',
): Promise<string> {
  const result = await runSlurm('sbatch', [
    '--parsable',
    '-p',
    'high',
    '--gpus-per-node=8',
    '-w',
    node,
    '-J',
    name,
    '-o',
    '/dev/null',
    '--wrap',
    `sleep ${seconds}`,
  ]);
  const id = result.stdout.trim().split(';')[0] ?? '';
  if (result.exitCode !== 0 || !/^\d+$/.test(id)) {
    throw new Error(`preempting sbatch failed (exit ${result.exitCode}): ${result.stderr}`);
  }
  return id;
}

/** Cancels every job whose name starts with `prefix` (one squeue, one scancel). Resolves to the ids. */
export async function cancelByNamePrefix(prefix: string): Promise<string[]> {
  const listed = await runSlurm('squeue', ['-h', '-o', '%i %j']);
  const ids = listed.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/, 2))
    .filter(([id, name]) => id && name?.startsWith(prefix))
    .map(([id]) => id as string);
  if (ids.length > 0) await runSlurm('scancel', ids);
  return ids;
}

/** Polls `scontrol ping` until the controller is UP; false after `timeoutMs`. */
async function waitForPing(timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ping = await runSlurm('scontrol', ['ping'], { timeoutMs: 5_000 });
    if (ping.stdout.includes('is UP')) return true;
    await sleep(200);
  }
  return false;
}

/**
 * Runs `fn` while slurmctld is frozen with SIGSTOP, as a hung controller looks to clients.
 * Always sends SIGCONT afterwards and waits (bounded) until the controller answers again.
 */
export async function withStoppedController<T>(fn: () => Promise<T>): Promise<T> {
  const pid = controllerPid();
  if (pid === undefined) throw new Error('slurmctld of the dev cluster is not running');
  process.kill(pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(pid, 'SIGCONT');
    await waitForPing(20_000);
  }
}

/**
 * Restarts the dev cluster's slurmctld as an operator would: SIGTERM (it saves its state),
 * `downMs` without a controller, then `slurmctld` again without `-c`, so jobs survive.
 * Resolves once it answers `scontrol ping`, with how long it was gone.
 */
export async function restartController(downMs = 0): Promise<{ goneMs: number }> {
  const pid = controllerPid();
  if (pid === undefined) throw new Error('slurmctld of the dev cluster is not running');
  const stoppedAt = Date.now();
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 300 && controllerPid() === pid; i++) {
    await sleep(100);
  }
  if (controllerPid() === pid) throw new Error(`slurmctld (pid ${pid}) did not stop on SIGTERM`);
  await sleep(downMs);
  // It daemonizes: the command returns once the controller runs in the background.
  await execa('slurmctld', [], { env: slurmEnv(), stdin: 'ignore', timeout: 30_000 });
  if (!(await waitForPing(30_000))) throw new Error('slurmctld did not answer after its restart');
  return { goneMs: Date.now() - stoppedAt };
}

/** A job-name prefix unique to this test run and call, e.g. `es-t-4f2a9c1b-`. */
export function uniqueJobPrefix(label = 't'): string {
  return `es-${label}-${randomBytes(4).toString('hex')}-`;
}
