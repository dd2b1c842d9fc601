import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { EngineCommand } from './engines.js';
import { WorkerError } from './errors.js';

/** Options of {@link spawnGuarded}. */
export interface SpawnGuardedOptions {
  /** Environment of the engine (the command's own variables go on top). */
  env: NodeJS.ProcessEnv;
  /** The engine's stdout and stderr are appended here. */
  logFile: string;
  /** The engine guard script (default: the built `engine-guard.mjs`). */
  guardPath?: string | undefined;
}

/**
 * Starts `command` through the engine guard, which leads its own process group (detached)
 * so stopping kills the engine and all its children, and which stops the engine if this
 * process dies without a chance to do it (SIGKILL, OOM killer).
 */
export function spawnGuarded(command: EngineCommand, options: SpawnGuardedOptions): ChildProcess {
  // Owner-only whatever the umask: an engine's log may show its prompts.
  const fd = openSync(options.logFile, 'a', 0o600);
  try {
    return spawn(
      process.execPath,
      [
        options.guardPath ?? engineGuardPath(),
        String(process.pid),
        '--',
        command.command,
        ...command.args,
      ],
      { env: { ...options.env, ...command.env }, stdio: ['ignore', fd, fd], detached: true },
    );
  } finally {
    closeSync(fd);
  }
}

/**
 * Path of the engine guard script: next to the built module (dist/index.mjs), or, when
 * this module runs from source (tests), the built one in ../dist.
 */
function engineGuardPath(): string {
  const beside = fileURLToPath(new URL('./engine-guard.mjs', import.meta.url));
  if (existsSync(beside)) return beside;
  const built = fileURLToPath(new URL('../dist/engine-guard.mjs', import.meta.url));
  if (existsSync(built)) return built;
  throw new WorkerError(
    'engine_guard_missing',
    `engine guard not found at ${beside} (build @es/worker)`,
  );
}
