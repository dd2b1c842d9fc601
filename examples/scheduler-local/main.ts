/**
 * The whole scheduler embedded in a program: `createScheduler` of @es/scheduler with the
 * local backend (worker processes on this machine) and the mock engine, so no SLURM and no
 * GPU. It is what `es-scheduler --backend local --model mock-model` runs, with the settings
 * built in code instead of parsed from flags. (examples/pool-local shows @es/pool alone,
 * with a trivial worker and no proxy.)
 *
 * Run it after `pnpm build` (the jobs run apps/worker's dist; Node 20 needs a TypeScript
 * loader): `npx tsx examples/scheduler-local/main.ts`
 */
import { fileURLToPath } from 'node:url';
import { createScheduler, resolveConfig, type Scheduler, type SchedulerDeps } from '@es/scheduler';

/** Options of {@link startSchedulerLocalExample}. */
export interface SchedulerLocalExampleOptions {
  /** Local "nodes" with 2 GPU ids each, all kept busy (default 2). */
  nodes?: number;
  /** Port of the OpenAI endpoint (default 0: any free port). */
  port?: number;
  /** Job scripts, logs, the secret and the URL files (default `logs/scheduler-local`). */
  logDir?: string;
  /** Where the scheduler logs (default: JSON lines on stdout). */
  logger?: SchedulerDeps['logger'];
}

/** Start a scheduler serving `mock-model` from one mock engine per GPU of every local node. */
export async function startSchedulerLocalExample(
  options: SchedulerLocalExampleOptions = {},
): Promise<Scheduler> {
  const nodes = options.nodes ?? 2;
  // The same overrides the flags would give; the defaults fill in the rest.
  const settings = resolveConfig(
    {
      backend: 'local',
      model: 'mock-model',
      engine: 'mock',
      localNodes: nodes,
      maxNodes: nodes,
      gpusPerNode: 2,
      port: options.port ?? 0,
      logDir: options.logDir ?? 'logs/scheduler-local',
      healthCheckInterval: 1,
      nodeAcquireInterval: 1,
    },
    {},
  );
  return createScheduler(settings, options.logger === undefined ? {} : { logger: options.logger });
}

async function main(): Promise<void> {
  const scheduler = await startSchedulerLocalExample();
  console.log(`OpenAI endpoint: ${scheduler.url}/v1 (model "mock-model"); Ctrl-C stops`);
  process.once('SIGINT', () => void scheduler.close({ cancelJobs: true }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
