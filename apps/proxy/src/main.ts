#!/usr/bin/env node
/**
 * `es-proxy`: the data plane. The primary supervises `--processes` workers sharing the
 * port; each worker serves /v1 from the scheduler's routing table (`startDataPlane` of
 * `@es/proxy`).
 */
import cluster from 'node:cluster';
import { derivedSecrets, redactingStream } from '@es/protocol';
import { pino } from 'pino';
import { ProxyFlagsError, parseProxyFlags, readSecretFile } from './flags.js';
import { runPrimary } from './primary.js';
import { runWorker } from './worker-process.js';

/** Every secret this process holds: no log line shows one (filled once read). */
let secrets: readonly string[] = [];
const logger = pino(
  { name: 'es-proxy' },
  redactingStream(() => secrets, process.stdout),
);

async function main(): Promise<void> {
  process.umask(0o077);
  const flags = await parseProxyFlags(process.argv.slice(2));
  const secret = readSecretFile(flags.secretFile);
  secrets = derivedSecrets(secret);
  if (cluster.isPrimary) runPrimary(flags, logger);
  else await runWorker(flags, secret, logger);
}

main().catch((error: unknown) => {
  if (error instanceof ProxyFlagsError) {
    process.stderr.write(`es-proxy: ${error.message}\n`);
    process.exit(2);
  }
  logger.error({ err: error }, (error as Error).message);
  process.exit(1);
});
