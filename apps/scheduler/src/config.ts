/**
 * The command line → the scheduler's settings: `flags.ts` parses argv into overrides,
 * `resolveConfig` of `@es/scheduler` merges them over the config file and the defaults and
 * checks them with the rules of the packages that own them.
 */
import { join } from 'node:path';
import { ConfigError, WORKER_CLI_PATH, resolveConfig, type SchedulerSettings } from '@es/scheduler';
import { parseFlags } from './flags.js';

export { ConfigError, WORKER_CLI_PATH, resolveConfig };

/**
 * The settings `argv` (without node and the script) asks for; a `ConfigError` names the flag
 * or key that is wrong.
 * @example
 * const settings = await settingsFromArgv(process.argv.slice(2));
 */
export async function settingsFromArgv(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<SchedulerSettings> {
  return resolveConfig(await parseFlags(argv), env);
}

/**
 * The worker the node jobs run: `--project-root`'s checkout with this Node (both at the same
 * paths on the nodes), or undefined for the checkout this scheduler runs from.
 */
export function workerCommandOf(settings: SchedulerSettings): string[] | undefined {
  return settings.projectRoot
    ? [process.execPath, join(settings.projectRoot, WORKER_CLI_PATH)]
    : undefined;
}
