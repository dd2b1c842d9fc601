#!/usr/bin/env node
/** `es-worker`: wiring only — flags → `@es/worker`'s `runWorker`. */
import { SlicePlanError } from '@es/pool';
import { derivedSecrets, redactingStream } from '@es/protocol';
import { WorkerError, runWorker } from '@es/worker';
import { pino } from 'pino';
import { hideBin } from 'yargs/helpers';
import { WorkerArgsError, parseWorkerArgs } from './args.js';
import { toWorkerOptions } from './main.js';

// Configuration mistakes exit 2, like a usage error; the worker's own exits are 0 or 1.
const USAGE_EXIT_CODE = 2;

async function main(): Promise<number> {
  // Engine logs, sockets and anything else this process or its engines create are
  // owner-only: other users of the node can read world-readable files.
  process.umask(0o077);
  const args = await parseWorkerArgs(hideBin(process.argv));
  let secrets: readonly string[] = [];
  const logger = pino(
    { level: args.logLevel, base: { job: args.jobId } },
    redactingStream(() => secrets),
  );
  const options = toWorkerOptions(args, logger);
  // No log line shows the secret, the keys derived from it or this job's engine key.
  if (options.secret !== undefined) secrets = derivedSecrets(options.secret, [args.jobId]);
  return runWorker(options);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    const usage =
      error instanceof WorkerArgsError ||
      error instanceof SlicePlanError ||
      (error instanceof WorkerError &&
        (error.code === 'invalid_option' || error.code === 'invalid_extra_args'));
    console.error(`es-worker: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(usage ? USAGE_EXIT_CODE : 1);
  },
);
