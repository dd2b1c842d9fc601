import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { classifySlurmMessage, SlurmError } from './errors.js';
import { execaRunner } from './runner.js';
import type { CommandResult, CommandRunner } from './runner.js';
import { renderBatchScript } from './script.js';
import type { JobSpec } from './script.js';
import { parseSbatchOutput, parseSqueue, SQUEUE_FORMAT } from './squeue.js';
import type { SlurmJob } from './squeue.js';

/** Options of {@link createSlurmClient}. */
export interface SlurmClientOptions {
  /** Runs the SLURM commands (default: execa, no shell). */
  runner?: CommandRunner;
  /** Variables added to the commands' environment, e.g. `{ SLURM_CONF: '/path/slurm.conf' }`. */
  env?: Record<string, string>;
  /** List this user's jobs (`squeue -u`); default the calling user (`squeue --me`). */
  user?: string;
  /** Executables (names on PATH or paths). */
  commands?: { sbatch?: string; squeue?: string; scancel?: string; scontrol?: string };
  /**
   * Timeouts in ms. sbatch retries a busy controller internally for up to about two
   * minutes, so its default is 150 s; squeue, scancel and scontrol default to 30 s.
   */
  timeouts?: { sbatchMs?: number; squeueMs?: number; scancelMs?: number; scontrolMs?: number };
}

/** Which jobs {@link SlurmClient.list} returns. */
export interface JobFilter {
  /** Only jobs with one of these names; an empty array matches nothing. */
  names?: string[];
}

/** sbatch, squeue and scancel with typed errors. */
export interface SlurmClient {
  /** Writes the batch script (0600) into `spec.logDir` and submits it; resolves to the job id. */
  submit(spec: JobSpec): Promise<string>;
  /** Every job of the user matching `filter`, including ended ones still known (`-t all`), in ONE squeue call. */
  list(filter?: JobFilter): Promise<SlurmJob[]>;
  /** Cancels jobs in ONE scancel call; unknown or ended ids are not an error. */
  cancel(ids: readonly string[]): Promise<void>;
  /**
   * Lets pending jobs start now, in ONE `scontrol update JobId=<ids> StartTime=now` call: a
   * requeued job waits for a begin time about 120 s ahead otherwise. Ended or unknown ids
   * are not an error; a refusal (site policy, a job not ours) is a {@link SlurmError}.
   */
  release(ids: readonly string[]): Promise<void>;
}

const JOB_ID = /^\d+(_\d+)?$/;
// scancel messages that mean "nothing left to cancel".
const GONE =
  /invalid job id specified|already completing or completed|job\/step already completed/i;

/** Throws a permanent {@link SlurmError} unless every id is a SLURM job id. */
function checkJobIds(file: string, ids: readonly string[]): void {
  for (const id of ids) {
    if (!JOB_ID.test(id)) {
      throw new SlurmError(`not a SLURM job id: ${JSON.stringify(id)}`, {
        code: 'slurm_invalid_request',
        kind: 'permanent',
        command: [file, ...ids],
      });
    }
  }
}

/** Whether every error line of a command says its jobs are already gone. */
function onlyGone(stderr: string): boolean {
  const errors = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return errors.length > 0 && errors.every((l) => GONE.test(l));
}

/**
 * Creates a SLURM client. Every call has a timeout and throws a {@link SlurmError} whose
 * `kind` says whether to retry, back off or give up.
 *
 * @example
 * const slurm = createSlurmClient({ env: { SLURM_CONF: '/etc/slurm/slurm.conf' } });
 * const id = await slurm.submit({
 *   name: 'es-llama',
 *   comment: 'es-llama-7f3a',
 *   gpusPerNode: 8,
 *   logDir: '/scratch/es/logs',
 *   command: ['es-worker', '--port', '8000'],
 * });
 * const jobs = await slurm.list({ names: ['es-llama'] });
 * await slurm.cancel([id]);
 */
export function createSlurmClient(options: SlurmClientOptions = {}): SlurmClient {
  const runner = options.runner ?? execaRunner;
  const sbatch = options.commands?.sbatch ?? 'sbatch';
  const squeue = options.commands?.squeue ?? 'squeue';
  const scancel = options.commands?.scancel ?? 'scancel';
  const scontrol = options.commands?.scontrol ?? 'scontrol';
  const sbatchMs = options.timeouts?.sbatchMs ?? 150_000;
  const squeueMs = options.timeouts?.squeueMs ?? 30_000;
  const scancelMs = options.timeouts?.scancelMs ?? 30_000;
  const scontrolMs = options.timeouts?.scontrolMs ?? 30_000;

  async function run(
    file: string,
    args: string[],
    timeoutMs: number,
    mutating: boolean,
  ): Promise<CommandResult> {
    const command = [file, ...args];
    let result: CommandResult;
    try {
      result = await runner(file, args, {
        timeoutMs,
        ...(options.env ? { env: options.env } : {}),
      });
    } catch (cause) {
      const code = (cause as { code?: unknown } | null)?.code;
      const notFound = code === 'ENOENT' || code === 'EACCES';
      throw new SlurmError(`${file} could not be started: ${(cause as Error)?.message ?? cause}`, {
        code: notFound ? 'slurm_command_not_found' : 'slurm_failed',
        kind: notFound ? 'permanent' : 'transient',
        command,
        cause,
      });
    }
    if (result.timedOut) {
      throw new SlurmError(`${file} did not finish within ${timeoutMs} ms`, {
        code: 'slurm_timeout',
        kind: 'transient',
        ambiguous: mutating,
        command,
        stderr: result.stderr,
      });
    }
    return result;
  }

  function failure(
    file: string,
    args: string[],
    result: CommandResult,
    mutating: boolean,
  ): SlurmError {
    const { code, kind } = classifySlurmMessage(result.stderr);
    const detail = result.stderr.trim().split('\n').at(-1) ?? '';
    return new SlurmError(`${file} failed (exit ${result.exitCode ?? 'signal'}): ${detail}`, {
      code,
      kind,
      // A socket timeout inside sbatch or scancel may have happened after the controller acted.
      ambiguous: mutating && code === 'slurm_socket_timeout',
      command: [file, ...args],
      ...(result.exitCode === undefined ? {} : { exitCode: result.exitCode }),
      stderr: result.stderr,
    });
  }

  return {
    async submit(spec) {
      const script = renderBatchScript(spec);
      // A directory this creates is owner-only; the scheduler refuses an existing one open to
      // others (another user could swap the script before sbatch reads it).
      await mkdir(spec.logDir, { recursive: true, mode: 0o700 });
      const safeName = spec.name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 80);
      const stamp = `${Date.now()}-${randomBytes(4).toString('hex')}`;
      const path = join(spec.logDir, `${safeName}-${stamp}.sbatch`);
      await writeFile(path, script, { mode: 0o600, flag: 'wx' });
      const args = ['--parsable', path];
      const result = await run(sbatch, args, sbatchMs, true);
      if (result.exitCode !== 0) throw failure(sbatch, args, result, true);
      const id = parseSbatchOutput(result.stdout);
      if (id === undefined) {
        throw new SlurmError(
          `sbatch printed no job id: ${JSON.stringify(result.stdout.slice(0, 200))}`,
          {
            code: 'slurm_bad_output',
            kind: 'transient',
            ambiguous: true,
            command: [sbatch, ...args],
            exitCode: 0,
            stderr: result.stderr,
          },
        );
      }
      return id;
    },

    async list(filter = {}) {
      const names = filter.names;
      if (names?.length === 0) return [];
      const args = ['-h', '-t', 'all', ...(options.user ? ['-u', options.user] : ['--me'])];
      // squeue's --name takes a comma list; names containing commas are filtered here only.
      if (names && !names.some((n) => n.includes(','))) args.push(`--name=${names.join(',')}`);
      args.push('-O', SQUEUE_FORMAT);
      const result = await run(squeue, args, squeueMs, false);
      if (result.exitCode !== 0) throw failure(squeue, args, result, false);
      const jobs = parseSqueue(result.stdout);
      if (!names) return jobs;
      const wanted = new Set(names);
      return jobs.filter((job) => wanted.has(job.name));
    },

    async cancel(ids) {
      if (ids.length === 0) return;
      checkJobIds(scancel, ids);
      const args = [...new Set(ids)];
      const result = await run(scancel, args, scancelMs, true);
      if (result.exitCode === 0 || onlyGone(result.stderr)) return;
      throw failure(scancel, args, result, true);
    },

    async release(ids) {
      if (ids.length === 0) return;
      checkJobIds(scontrol, ids);
      const args = ['update', `JobId=${[...new Set(ids)].join(',')}`, 'StartTime=now'];
      const result = await run(scontrol, args, scontrolMs, true);
      if (result.exitCode === 0 || onlyGone(result.stderr)) return;
      throw failure(scontrol, args, result, true);
    },
  };
}
