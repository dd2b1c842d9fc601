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

/** The default runner: execa, no shell, stdin closed, SIGKILL 2 s after a timeout's SIGTERM. */
export const execaRunner: CommandRunner = async (file, args, options) => {
  const result = await execa(file, args, {
    timeout: options.timeoutMs,
    forceKillAfterDelay: 2_000,
    reject: false,
    stdin: 'ignore',
    stripFinalNewline: false,
    ...(options.env ? { env: options.env } : {}),
  });
  if (result.failed && !result.timedOut && result.exitCode === undefined && !result.isTerminated) {
    // The process never ran (ENOENT, EACCES): hand the spawn error to the caller.
    throw result.cause ?? result;
  }
  return {
    exitCode: result.exitCode,
    stdout: String(result.stdout ?? ''),
    stderr: String(result.stderr ?? ''),
    timedOut: result.timedOut,
  };
};
