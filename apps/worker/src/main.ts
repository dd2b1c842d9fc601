import {
  WORKER_ENV,
  ensurePrivateDir,
  isPrivateDirError,
  isSecretFileError,
  readSecret,
} from '@es/protocol';
import type { WorkerLogger, WorkerOptions } from '@es/worker';
import type { WorkerArgs } from './args.js';
import { WorkerArgsError } from './args.js';

/**
 * Read the shared secret under the one secret policy of `@es/protocol` (owned by this
 * user, unreadable by others, not empty); a refusal names `--secret-file` and the fix.
 */
export function readSecretFile(file: string): string {
  try {
    return readSecret(file);
  } catch (error) {
    if (!isSecretFileError(error)) throw error;
    throw new WorkerArgsError(
      'secret-file',
      `${error.message} (--secret-file, or ${WORKER_ENV.secretFile})`,
    );
  }
}

/**
 * The log directory (`--log-dir`), created owner-only (0700) when missing; one open to
 * group or others, or owned by another user, is refused naming `--log-dir` and the fix.
 */
export function ensureLogDir(dir: string): string {
  try {
    return ensurePrivateDir(dir, { flag: '--log-dir' });
  } catch (error) {
    if (!isPrivateDirError(error)) throw error;
    throw new WorkerArgsError('log-dir', error.message);
  }
}

/** Turn parsed flags into `@es/worker` options (reads the secret file, makes the log directory). */
export function toWorkerOptions(args: WorkerArgs, logger: WorkerLogger): WorkerOptions {
  return {
    schedulerUrl: args.schedulerUrl,
    ...(args.schedulerUrlFile === undefined ? {} : { schedulerUrlFile: args.schedulerUrlFile }),
    deployment: args.deployment,
    engine: args.engine,
    model: args.model,
    jobId: args.jobId,
    restartCount: args.restartCount,
    basePort: args.basePort,
    tensorParallelSize: args.tensorParallelSize,
    ...(args.gpusPerNode === undefined ? {} : { gpusPerNode: args.gpusPerNode }),
    gpuMemoryUtilization: args.gpuMemoryUtilization,
    ...(args.maxModelLen === undefined ? {} : { maxModelLen: args.maxModelLen }),
    ...(args.servedModelName === undefined ? {} : { servedModelName: args.servedModelName }),
    engineExtraArgs: args.engineExtraArgs,
    ...(args.engineBin === undefined ? {} : { engineBin: args.engineBin }),
    ...(args.secretFile === undefined ? {} : { secret: readSecretFile(args.secretFile) }),
    ...(args.host === undefined ? {} : { host: args.host }),
    ...(args.logDir === undefined ? {} : { logDir: ensureLogDir(args.logDir) }),
    drainGraceMs: args.drainGraceSeconds * 1000,
    handoverMarginMs: args.handoverMarginSeconds * 1000,
    killGraceMs: args.killGraceSeconds * 1000,
    logger,
  };
}
