import { hostname } from 'node:os';
import {
  WORKER_ENV,
  WORKER_FLAGS,
  EsError,
  WORKER_NAME_OPTIONS,
  commandLineValueProblem,
  defaultHandoverMargin,
  isHttpUrl,
  missingWorkerFlag,
  readSchedulerUrlSync,
  readWorkerArgv,
  workerGraceProblem,
  workerYargsOptions,
} from '@es/protocol';
import type { WorkerArgv } from '@es/protocol';
import yargs from 'yargs';

/**
 * Everything `es-worker` was asked to do, validated, with defaults applied: one field per
 * flag of `WORKER_FLAGS` (`@es/protocol`), the ones the worker cannot do without resolved.
 */
export type WorkerArgs = Omit<
  WorkerArgv,
  'schedulerUrl' | 'model' | 'deployment' | 'jobId' | 'restartCount' | 'handoverMarginSeconds'
> & {
  /** `--handover-margin`, or its default for `--drain-grace`. */
  handoverMarginSeconds: number;
  schedulerUrl: string;
  model: string;
  deployment: string;
  jobId: string;
  restartCount: number;
};

/** A flag with a value `es-worker` cannot use; the message names the flag and the fix. */
export class WorkerArgsError extends EsError<'invalid_flag'> {
  override readonly name = 'WorkerArgsError';
  /** The flag without its dashes. */
  declare readonly param: string;
  constructor(flag: string, message: string) {
    super('invalid_flag', message, { param: flag });
  }
}

function integer(flag: string, value: number | undefined, min: number, example: string): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min) {
    throw new WorkerArgsError(
      flag,
      `--${flag} must be an integer >= ${min}, got ${String(value)}: pass e.g. --${flag} ${example}`,
    );
  }
}

// The scheduler names a deployment after the last path segment of the served name or
// model; a worker started by hand with the seed's flags registers under the same name.
function defaultDeployment(servedModelName: string | undefined, model: string): string {
  const last = (servedModelName ?? model).split('/').filter(Boolean).pop() ?? 'model';
  const cleaned = last.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return (cleaned || 'model').slice(0, 63);
}

/**
 * Every text value (from a flag or its environment variable) goes on into an engine's argv
 * or a log line: none may hold a control character, and a name (model, served model name,
 * deployment) may not be empty or start with `-`, or `--served-model-name=--engine-bin=...`
 * would become a flag of the engine or of a worker started from a script.
 */
function checkValues(parsed: WorkerArgv): void {
  for (const [key, spec] of Object.entries(WORKER_FLAGS)) {
    const value: unknown = parsed[key as keyof WorkerArgv];
    if (spec.type !== 'string' || typeof value !== 'string') continue;
    const name = (WORKER_NAME_OPTIONS as readonly string[]).includes(key);
    const problem = commandLineValueProblem(spec.flag, value, { name });
    if (problem) throw new WorkerArgsError(spec.flag, problem);
  }
}

/** The URL file's first line (an invalid one too: the check below names it), if any. */
function urlInFile(file: string): string | undefined {
  const read = readSchedulerUrlSync(file);
  return read.kind === 'url' ? read.url : read.kind === 'invalid' ? read.text : undefined;
}

/** The flag yargs' failure message is about (`Unknown arguments: gpus, x` names `gpus`). */
function flagOf(message: string): string {
  return (
    /^(?:Unknown arguments?|Invalid values):?\s*(?:Argument:\s*)?([A-Za-z0-9-]+)/.exec(
      message,
    )?.[1] ?? ''
  );
}

/**
 * Parse `es-worker` flags (`WORKER_FLAGS` of `@es/protocol`). Environment fallbacks:
 * `ES_SCHEDULER_URL`, `ES_SCHEDULER_URL_FILE`, `ES_DEPLOYMENT`, `ES_SECRET_FILE`,
 * `SLURM_JOB_ID`, `SLURM_RESTART_COUNT`.
 */
export async function parseWorkerArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<WorkerArgs> {
  const raw = await yargs(argv)
    .scriptName('es-worker')
    .usage('$0 [options]\n\nRun the engine instances of one node and keep the scheduler informed.')
    .options(workerYargsOptions())
    .strict()
    .help()
    .version(false)
    .fail((message, error) => {
      throw error ?? new WorkerArgsError(flagOf(message), `${message} (see es-worker --help)`);
    })
    .parseAsync();
  const parsed = readWorkerArgv(raw, env);

  const { schedulerUrlFile } = parsed;
  const schedulerUrl =
    parsed.schedulerUrl ??
    (schedulerUrlFile === undefined ? undefined : urlInFile(schedulerUrlFile));
  if (!schedulerUrl) {
    throw new WorkerArgsError(
      'scheduler-url',
      schedulerUrlFile === undefined
        ? `--scheduler-url is required: pass --scheduler-url http://<scheduler-host>:<port> or set ${WORKER_ENV.schedulerUrl}`
        : `no scheduler URL: --scheduler-url-file ${schedulerUrlFile} is missing or empty (is the scheduler serving?); pass --scheduler-url http://<scheduler-host>:<port>`,
    );
  }
  if (!isHttpUrl(schedulerUrl)) {
    throw new WorkerArgsError(
      'scheduler-url',
      `--scheduler-url "${schedulerUrl}" is not an http(s) URL: pass e.g. --scheduler-url http://login1:8780`,
    );
  }
  const missing = missingWorkerFlag(parsed);
  if (missing) throw new WorkerArgsError(missing.flag, missing.message);
  checkValues(parsed);
  const model = parsed.model as string;
  integer('base-port', parsed.basePort, 0, '8001');
  if (parsed.basePort > 65535) {
    throw new WorkerArgsError('base-port', `--base-port must be <= 65535, got ${parsed.basePort}`);
  }
  integer('tensor-parallel-size', parsed.tensorParallelSize, 1, '4');
  integer('gpus-per-node', parsed.gpusPerNode, 1, '8');
  integer('max-model-len', parsed.maxModelLen, 1, '32768');
  const mem = parsed.gpuMemoryUtilization;
  if (!(mem > 0 && mem <= 1)) {
    throw new WorkerArgsError(
      'gpu-memory-utilization',
      `--gpu-memory-utilization must be in (0, 1], got ${mem}: pass e.g. --gpu-memory-utilization 0.9`,
    );
  }
  // Both graces plus the drain and deregister requests (2 s each at most) must fit in
  // SLURM's KillWait (30 s by default), or SLURM SIGKILLs the worker mid-drain; the
  // hand-over margin ends inside the drain grace.
  const graces = workerGraceProblem(parsed);
  if (graces) throw new WorkerArgsError(graces.flag, graces.message);
  const handoverMarginSeconds =
    parsed.handoverMarginSeconds ?? defaultHandoverMargin(parsed.drainGraceSeconds);
  const restartCount = parsed.restartCount ?? 0;
  integer('restart-count', restartCount, 0, '0');
  return {
    ...parsed,
    schedulerUrl,
    model,
    deployment: parsed.deployment ?? defaultDeployment(parsed.servedModelName, model),
    jobId: parsed.jobId ?? `manual-${hostname()}-${process.pid}`,
    restartCount,
    handoverMarginSeconds,
  };
}
