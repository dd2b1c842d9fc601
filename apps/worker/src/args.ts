import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { WORKER_ENV } from '@es/protocol';
import type { EngineKind } from '@es/protocol';
import { isHttpUrl } from '@es/worker';
import yargs from 'yargs';

/** Everything `es-worker` was asked to do, validated, with defaults applied. */
export interface WorkerArgs {
  schedulerUrl: string;
  schedulerUrlFile: string | undefined;
  deployment: string;
  engine: EngineKind;
  model: string;
  basePort: number;
  tensorParallelSize: number;
  gpusPerNode: number | undefined;
  gpuMemoryUtilization: number;
  maxModelLen: number | undefined;
  servedModelName: string | undefined;
  engineExtraArgs: string;
  engineBin: string | undefined;
  secretFile: string | undefined;
  host: string | undefined;
  logDir: string | undefined;
  jobId: string;
  restartCount: number;
  drainGraceSeconds: number;
  killGraceSeconds: number;
  logLevel: string;
}

/** A flag with a value `es-worker` cannot use; the message names the flag and the fix. */
export class WorkerArgsError extends Error {
  override readonly name = 'WorkerArgsError';
  readonly code = 'INVALID_FLAG';
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(message);
  }
}

const ENGINES = ['vllm', 'sglang', 'mock'] as const;

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

/** The first line of a file, trimmed; undefined when it cannot be read or is empty. */
function firstLine(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').split('\n')[0]?.trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Parse `es-worker` flags. Environment fallbacks: `ES_SCHEDULER_URL`, `ES_SCHEDULER_URL_FILE`, `ES_DEPLOYMENT`,
 * `ES_SECRET_FILE`, `SLURM_JOB_ID`, `SLURM_RESTART_COUNT`.
 */
export async function parseWorkerArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<WorkerArgs> {
  const parsed = await yargs(argv)
    .scriptName('es-worker')
    .usage('$0 [options]\n\nRun the engine instances of one node and keep the scheduler informed.')
    .options({
      'scheduler-url': {
        type: 'string',
        describe: `Scheduler base URL, e.g. http://login1:8780 (env ${WORKER_ENV.schedulerUrl}; else the first line of --scheduler-url-file)`,
      },
      'scheduler-url-file': {
        type: 'string',
        describe: `File naming the scheduler's current URL, followed when the scheduler moves (env ${WORKER_ENV.schedulerUrlFile}; the scheduler writes <log dir>/scheduler-url)`,
      },
      engine: { choices: ENGINES, default: 'vllm' as EngineKind, describe: 'Inference engine' },
      model: { type: 'string', describe: 'Model path or hub id' },
      'base-port': {
        type: 'number',
        default: 8001,
        describe: 'Port of instance 0; i gets +i (0: any free ports)',
      },
      'tensor-parallel-size': { type: 'number', default: 1, describe: 'GPUs per instance' },
      'gpus-per-node': {
        type: 'number',
        describe: 'GPUs to use (default: CUDA_VISIBLE_DEVICES, else 8; mock: the TP size)',
      },
      'gpu-memory-utilization': {
        type: 'number',
        default: 0.9,
        describe: 'vLLM --gpu-memory-utilization / SGLang --mem-fraction-static',
      },
      'max-model-len': { type: 'number', describe: 'Context length (SGLang --context-length)' },
      'served-model-name': { type: 'string', describe: 'Name clients use as "model"' },
      'engine-extra-args': {
        type: 'string',
        default: '',
        describe: 'Extra engine arguments, split like a shell would (quotes respected)',
      },
      'engine-bin': {
        type: 'string',
        describe: 'Engine executable (default: vllm / python on PATH; mock: es-mock-engine)',
      },
      deployment: {
        type: 'string',
        describe: `Deployment name (env ${WORKER_ENV.deployment}; default from the model)`,
      },
      'secret-file': {
        type: 'string',
        describe: `Shared secret file (env ${WORKER_ENV.secretFile})`,
      },
      host: {
        type: 'string',
        describe:
          'Address to bind engines and register (default: auto, 127.0.0.1 for a loopback scheduler)',
      },
      'log-dir': {
        type: 'string',
        describe: 'Directory of engine log files (default $TMPDIR/es-worker-<job id>)',
      },
      'job-id': { type: 'string', describe: 'Job id (default SLURM_JOB_ID)' },
      'restart-count': {
        type: 'number',
        describe: 'Incarnation (default SLURM_RESTART_COUNT or 0)',
      },
      'drain-grace': {
        type: 'number',
        default: 15,
        describe: 'Seconds in-flight requests may finish after the drain notice',
      },
      'kill-grace': {
        type: 'number',
        default: 5,
        describe: "Seconds between an engine's SIGTERM and SIGKILL",
      },
      'log-level': { type: 'string', default: 'info', describe: 'pino log level' },
    })
    .strict()
    .help()
    .version(false)
    .fail((message, error) => {
      throw error ?? new WorkerArgsError('', `${message} (see es-worker --help)`);
    })
    .parseAsync();

  const schedulerUrlFile = parsed['scheduler-url-file'] ?? env[WORKER_ENV.schedulerUrlFile];
  const schedulerUrl =
    parsed['scheduler-url'] ??
    env[WORKER_ENV.schedulerUrl] ??
    (schedulerUrlFile === undefined ? undefined : firstLine(schedulerUrlFile));
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
  const model = parsed.model;
  if (!model) {
    throw new WorkerArgsError('model', '--model is required: pass --model <path or hub id>');
  }
  integer('base-port', parsed['base-port'], 0, '8001');
  if (parsed['base-port'] > 65535) {
    throw new WorkerArgsError(
      'base-port',
      `--base-port must be <= 65535, got ${parsed['base-port']}`,
    );
  }
  integer('tensor-parallel-size', parsed['tensor-parallel-size'], 1, '4');
  integer('gpus-per-node', parsed['gpus-per-node'], 1, '8');
  integer('max-model-len', parsed['max-model-len'], 1, '32768');
  const mem = parsed['gpu-memory-utilization'];
  if (!(mem > 0 && mem <= 1)) {
    throw new WorkerArgsError(
      'gpu-memory-utilization',
      `--gpu-memory-utilization must be in (0, 1], got ${mem}: pass e.g. --gpu-memory-utilization 0.9`,
    );
  }
  const grace = parsed['drain-grace'];
  const killGrace = parsed['kill-grace'];
  // Both graces plus the drain and deregister requests (2 s each at most) must fit in
  // SLURM's KillWait (30 s by default), or SLURM SIGKILLs the worker mid-drain.
  if (!(grace >= 0) || !(killGrace > 0) || grace + killGrace > 26) {
    throw new WorkerArgsError(
      !(grace >= 0) || grace + killGrace > 26 ? 'drain-grace' : 'kill-grace',
      `--drain-grace (${grace}) + --kill-grace (${killGrace}) seconds must be >= 0 and > 0 and ` +
        "add up to at most 26 to fit SLURM's default KillWait of 30 s, e.g. --drain-grace 15 --kill-grace 5",
    );
  }
  const restartText = env.SLURM_RESTART_COUNT;
  const restartCount = parsed['restart-count'] ?? (restartText ? Number(restartText) : 0);
  integer('restart-count', restartCount, 0, '0');
  const servedModelName = parsed['served-model-name'];
  return {
    schedulerUrl,
    schedulerUrlFile,
    deployment:
      parsed.deployment ?? env[WORKER_ENV.deployment] ?? defaultDeployment(servedModelName, model),
    engine: parsed.engine,
    model,
    basePort: parsed['base-port'],
    tensorParallelSize: parsed['tensor-parallel-size'],
    gpusPerNode: parsed['gpus-per-node'],
    gpuMemoryUtilization: mem,
    maxModelLen: parsed['max-model-len'],
    servedModelName,
    engineExtraArgs: parsed['engine-extra-args'],
    engineBin: parsed['engine-bin'],
    secretFile: parsed['secret-file'] ?? env[WORKER_ENV.secretFile],
    host: parsed.host,
    logDir: parsed['log-dir'],
    jobId: parsed['job-id'] ?? env.SLURM_JOB_ID ?? `manual-${hostname()}-${process.pid}`,
    restartCount,
    drainGraceSeconds: grace,
    killGraceSeconds: killGrace,
    logLevel: parsed['log-level'],
  };
}
