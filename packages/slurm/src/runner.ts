import { terminateGroup } from '@es/proc';
import type { Termination } from '@es/proc';
import { execa } from 'execa';

/** What a {@link CommandRunner} reports about one finished (or killed) command. */
export interface CommandResult {
  /** Exit code; undefined when the process was killed (e.g. on timeout). */
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  /** True when the runner killed the command because `timeoutMs` passed. */
  timedOut: boolean;
}

/** Options of one command run. */
export interface CommandRunOptions {
  timeoutMs: number;
  /** Variables added to the inherited environment (e.g. `SLURM_CONF`). */
  env?: Record<string, string>;
}

/**
 * Runs one command without a shell. Resolves for every exit code; rejects only when the
 * command could not be started (the error's `code` is then e.g. `ENOENT`). Inject your
 * own to run SLURM commands over ssh or in tests.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options: CommandRunOptions,
) => Promise<CommandResult>;

/**
 * The default runner: execa, no shell, stdin closed. On timeout it sends SIGTERM and, 2 s
 * later, SIGKILL to the command's whole process group, so a wrapper script's children
 * cannot keep the call waiting on their open output pipes.
 */
export const execaRunner: CommandRunner = async (file, args, options) => {
  const subprocess = execa(file, args, {
    reject: false,
    stdin: 'ignore',
    stripFinalNewline: false,
    detached: true,
    ...(options.env ? { env: options.env } : {}),
  });
  let timedOut = false;
  let termination: Termination | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    termination = terminateGroup(subprocess.pid, { graceMs: 2_000 });
  }, options.timeoutMs);
  try {
    const result = await subprocess;
    if (result.failed && !timedOut && result.exitCode === undefined && !result.isTerminated) {
      // The process never ran (ENOENT, EACCES): hand the spawn error to the caller.
      throw result.cause ?? result;
    }
    return {
      exitCode: result.exitCode,
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    termination?.cancel();
  }
};
