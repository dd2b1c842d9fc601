import { readFileSync, statSync } from 'node:fs';
import type { WorkerLogger, WorkerOptions } from '@es/worker';
import type { WorkerArgs } from './args.js';
import { WorkerArgsError } from './args.js';

/** Read the shared secret; `--secret-file` errors name the flag and the fix. */
export function readSecret(file: string, logger: WorkerLogger): string {
  let secret: string;
  try {
    secret = readFileSync(file, 'utf8');
    // Same-user trust: anyone who can read the secret can impersonate workers.
    if ((statSync(file).mode & 0o077) !== 0) {
      logger.warn({ file }, `secret file ${file} is readable by others: chmod 600 ${file}`);
    }
  } catch (error) {
    throw new WorkerArgsError(
      'secret-file',
      `--secret-file ${file} cannot be read (${(error as Error).message}): pass the scheduler's secret file on the shared filesystem`,
    );
  }
  if (secret.trim() === '') {
    throw new WorkerArgsError(
      'secret-file',
      `--secret-file ${file} is empty: pass the file the scheduler created`,
    );
  }
  return secret;
}

/** Turn parsed flags into `@es/worker` options (reads the secret file). */
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
    ...(args.secretFile === undefined ? {} : { secret: readSecret(args.secretFile, logger) }),
    ...(args.host === undefined ? {} : { host: args.host }),
    ...(args.logDir === undefined ? {} : { logDir: args.logDir }),
    drainGraceMs: args.drainGraceSeconds * 1000,
    killGraceMs: args.killGraceSeconds * 1000,
    logger,
  };
}
