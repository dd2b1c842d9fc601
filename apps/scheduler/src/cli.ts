#!/usr/bin/env node
/**
 * `es-scheduler` (`scripts/es-scheduler` in a checkout): parse flags and config, start
 * serving, stop cleanly on SIGTERM/SIGINT.
 */
import { redactingStream } from '@es/protocol';
import { createScheduler } from '@es/scheduler';
import { pino } from 'pino';
import { ConfigError, settingsFromArgv, workerCommandOf } from './config.js';
import { humanLogStream } from './log-format.js';

/** Every secret this process holds: no log line shows one (filled once they are read). */
let secrets: readonly string[] = [];
// JSON for machines (a pipe, a file, systemd); readable lines on a terminal unless ES_LOG_JSON=1.
const logger = pino(
  { name: 'es-scheduler' },
  redactingStream(
    () => secrets,
    process.stdout.isTTY && process.env.ES_LOG_JSON !== '1' ? humanLogStream() : process.stdout,
  ),
);

async function main(): Promise<void> {
  // Everything this process and the jobs it submits create (logs, job scripts, the secret,
  // SLURM's .out/.err: sbatch passes the umask on) is owner-only: other users of the
  // cluster can run ps and read world-readable files.
  process.umask(0o077);
  let settings;
  try {
    settings = await settingsFromArgv(process.argv.slice(2));
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`es-scheduler: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  for (const warning of settings.warnings ?? []) logger.warn(warning);
  const workerCommand = workerCommandOf(settings);
  const scheduler = await createScheduler(settings, {
    logger,
    onSecrets: (held) => {
      secrets = held;
    },
    onStopped: () => process.exit(0),
    ...(workerCommand === undefined ? {} : { workerCommand }),
  });
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn(`${signal} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    logger.info(
      settings.cancelOnExit || scheduler.backend === 'local'
        ? `${signal}: stopping and ending the ${scheduler.backend} jobs`
        : `${signal}: stopping; SLURM jobs keep running and are re-adopted on the next start`,
    );
    scheduler.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error: unknown) => {
  // A setting refused at start-up (the log directory, the secret file): a usage error.
  if (error instanceof ConfigError) {
    process.stderr.write(`es-scheduler: ${error.message}\n`);
    process.exit(2);
  }
  logger.error({ err: error }, (error as Error).message);
  process.exit(1);
});
