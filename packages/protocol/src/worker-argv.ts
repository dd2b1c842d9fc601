/**
 * The `es-worker` command line, defined once: the scheduler builds a worker's argv from
 * this table ({@link buildWorkerArgv}) and the worker parses its argv with options made
 * from it ({@link workerYargsOptions}, {@link readWorkerArgv}). A flag added, renamed or
 * retyped here is a compile error wherever it is built or read.
 */
import { ProtocolError } from './errors.js';
import { ENGINE_KINDS } from './engines.js';
import { WORKER_ENV } from './keys.js';

/** One flag of `es-worker`. */
export interface WorkerFlagSpec {
  /** The flag without its dashes: `--scheduler-url` is `scheduler-url`. */
  readonly flag: string;
  readonly type: 'string' | 'number';
  /** The `--help` line. */
  readonly describe: string;
  /** Allowed values (the help shows them instead of the type). */
  readonly choices?: readonly string[];
  /** Value when the flag is absent (the parser applies it; the builder may omit the flag). */
  readonly default?: string | number;
  /** The worker cannot start without it: building without it fails, and so does parsing. */
  readonly required?: true;
  /** What to pass, shown in the error when a required flag is missing (`<path or hub id>`). */
  readonly example?: string;
  /** Environment variable read when the flag is absent (the scheduler sets them in the job). */
  readonly env?: string;
}

/** Every flag of `es-worker`, in `--help` order, keyed by the option's name. */
export const WORKER_FLAGS = {
  schedulerUrl: {
    flag: 'scheduler-url',
    type: 'string',
    describe: `Scheduler base URL, e.g. http://login1:8780 (env ${WORKER_ENV.schedulerUrl}; else the first line of --scheduler-url-file)`,
    env: WORKER_ENV.schedulerUrl,
  },
  schedulerUrlFile: {
    flag: 'scheduler-url-file',
    type: 'string',
    describe: `File naming the scheduler's current URL, followed when the scheduler moves (env ${WORKER_ENV.schedulerUrlFile}; the scheduler writes <log dir>/scheduler-url)`,
    env: WORKER_ENV.schedulerUrlFile,
  },
  engine: {
    flag: 'engine',
    type: 'string',
    choices: ENGINE_KINDS,
    default: 'vllm',
    describe: 'Inference engine',
  },
  model: {
    flag: 'model',
    type: 'string',
    describe: 'Model path or hub id',
    required: true,
    example: '<path or hub id>',
  },
  basePort: {
    flag: 'base-port',
    type: 'number',
    default: 8001,
    describe: 'Port of instance 0; i gets +i (0: any free ports)',
  },
  tensorParallelSize: {
    flag: 'tensor-parallel-size',
    type: 'number',
    default: 1,
    describe: 'GPUs per instance',
  },
  gpusPerNode: {
    flag: 'gpus-per-node',
    type: 'number',
    describe:
      'GPUs of the node when the job does not say (the GPUs SLURM allocated win: CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE)',
  },
  gpuMemoryUtilization: {
    flag: 'gpu-memory-utilization',
    type: 'number',
    default: 0.9,
    describe: 'vLLM --gpu-memory-utilization / SGLang --mem-fraction-static',
  },
  maxModelLen: {
    flag: 'max-model-len',
    type: 'number',
    describe: 'Context length (SGLang --context-length)',
  },
  servedModelName: {
    flag: 'served-model-name',
    type: 'string',
    describe: 'Name clients use as "model"',
  },
  engineExtraArgs: {
    flag: 'engine-extra-args',
    type: 'string',
    default: '',
    describe: 'Extra engine arguments, split like a shell would (quotes respected)',
  },
  engineBin: {
    flag: 'engine-bin',
    type: 'string',
    describe: 'Engine executable (default: vllm / python on PATH; mock: es-mock-engine)',
  },
  deployment: {
    flag: 'deployment',
    type: 'string',
    describe: `Deployment name (env ${WORKER_ENV.deployment}; default from the model)`,
    env: WORKER_ENV.deployment,
  },
  secretFile: {
    flag: 'secret-file',
    type: 'string',
    describe: `Shared secret file (env ${WORKER_ENV.secretFile})`,
    env: WORKER_ENV.secretFile,
  },
  host: {
    flag: 'host',
    type: 'string',
    describe:
      'Address to bind engines and register (default: auto, 127.0.0.1 for a loopback scheduler)',
  },
  logDir: {
    flag: 'log-dir',
    type: 'string',
    describe:
      'Directory of engine log files, made 0700 when missing; one open to other users is refused (default: a new private $TMPDIR/es-worker-<job id>-XXXXXX)',
  },
  jobId: {
    flag: 'job-id',
    type: 'string',
    describe: 'Job id (default SLURM_JOB_ID)',
    env: 'SLURM_JOB_ID',
  },
  restartCount: {
    flag: 'restart-count',
    type: 'number',
    describe: 'Incarnation (default SLURM_RESTART_COUNT or 0)',
    env: 'SLURM_RESTART_COUNT',
  },
  drainGraceSeconds: {
    flag: 'drain-grace',
    type: 'number',
    default: 15,
    describe:
      "Seconds in-flight requests may finish after the drain notice; keep it a few seconds under the partition's preemption GraceTime",
  },
  handoverMarginSeconds: {
    flag: 'handover-margin',
    type: 'number',
    describe:
      'Seconds before the end of --drain-grace at which generations still running are handed over (continued on another worker); < --drain-grace (default 5, or half of --drain-grace when that is under 10)',
  },
  killGraceSeconds: {
    flag: 'kill-grace',
    type: 'number',
    default: 5,
    describe: "Seconds between an engine's SIGTERM and SIGKILL",
  },
  logLevel: { flag: 'log-level', type: 'string', default: 'info', describe: 'pino log level' },
} as const satisfies Record<string, WorkerFlagSpec>;

type Flags = typeof WORKER_FLAGS;
/** The name of an `es-worker` option (`schedulerUrl`, `basePort`...). */
export type WorkerFlagName = keyof Flags;
type ValueOf<S> = S extends { readonly choices: readonly (infer C)[] }
  ? C
  : S extends { readonly type: 'number' }
    ? number
    : string;
type RequiredNames = {
  [K in WorkerFlagName]: Flags[K] extends { required: true } ? K : never;
}[WorkerFlagName];
type DefaultedNames = {
  [K in WorkerFlagName]: Flags[K] extends { default: unknown } ? K : never;
}[WorkerFlagName];

/** What {@link buildWorkerArgv} takes: the required options, and any others. */
export type WorkerArgvInput = { [K in RequiredNames]: ValueOf<Flags[K]> } & {
  [K in Exclude<WorkerFlagName, RequiredNames>]?: ValueOf<Flags[K]> | undefined;
};

/** What {@link readWorkerArgv} gives: every option, defaulted ones always set. */
export type WorkerArgv = { [K in DefaultedNames]: ValueOf<Flags[K]> } & {
  [K in Exclude<WorkerFlagName, DefaultedNames>]: ValueOf<Flags[K]> | undefined;
};

/** An option {@link buildWorkerArgv} cannot turn into a flag; `flag` names it. */
export class WorkerArgvError extends ProtocolError<'invalid_worker_argv'> {
  override readonly name = 'WorkerArgvError';
  /** The flag without its dashes (`model`), or the unknown option's name. */
  declare readonly param: string;
  constructor(flag: string, message: string) {
    super('invalid_worker_argv', message, { param: flag });
  }
}

const SPECS = Object.entries(WORKER_FLAGS) as [WorkerFlagName, WorkerFlagSpec][];

/**
 * The options whose value is a name (a model, the name clients use, a deployment): such a
 * value never starts with `-`, so no parser takes it for a flag.
 */
export const WORKER_NAME_OPTIONS = ['model', 'servedModelName', 'deployment'] as const;

// C0 controls (newline, carriage return, tab, NUL, escape ...) and DEL.
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * What is wrong with `value` as the value of `--<flag>` on a command line (an es-worker or
 * engine argv, a batch script line); undefined when nothing is. No value may hold a control
 * character (a newline would start a new line of the batch script); a name
 * (`{ name: true }`: model, served model name, deployment, conda env) may also not be empty
 * or start with `-`, so `--served-model-name --engine-bin=/bin/sh` cannot become a flag.
 * @example
 * commandLineValueProblem('served-model-name', '--engine-bin=/bin/sh', { name: true });
 * // '--served-model-name "--engine-bin=/bin/sh" starts with "-": ...'
 */
export function commandLineValueProblem(
  flag: string,
  value: string,
  options: { name?: boolean } = {},
): string | undefined {
  const shown = JSON.stringify(value);
  if (CONTROL.test(value)) {
    return `--${flag} ${shown} contains a control character (a line break, tab or escape): pass it on one line, without control characters`;
  }
  if (options.name && value.trim() === '') {
    return `--${flag} is empty: pass a name, e.g. --${flag}=Qwen3-32B`;
  }
  if (options.name && value.startsWith('-')) {
    return `--${flag} ${shown} starts with "-": a name cannot (a command line would read it as a flag); pass a name that starts with a letter, digit, "/" or "."`;
  }
  return undefined;
}

/**
 * The `es-worker` flags for `options`, in `--help` order; options left undefined are
 * omitted (the worker applies its default). Every value is passed in the `--flag=value`
 * form, one argv word, so no value (one starting with `-` included) is taken for a flag.
 * @throws {WorkerArgvError} naming the flag, when a required option is missing, a value
 * has the wrong type or is not among the choices, holds a control character, a name
 * ({@link WORKER_NAME_OPTIONS}) is empty or starts with `-`, or an option is unknown.
 * @example
 * buildWorkerArgv({ model: 'Qwen/Qwen3-32B', engine: 'sglang', tensorParallelSize: 4 });
 * // ['--engine=sglang', '--model=Qwen/Qwen3-32B', '--tensor-parallel-size=4']
 */
export function buildWorkerArgv(options: WorkerArgvInput): string[] {
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(WORKER_FLAGS, key)) {
      throw new WorkerArgvError(key, `es-worker has no option "${key}" (no flag to pass it)`);
    }
  }
  const argv: string[] = [];
  for (const [key, spec] of SPECS) {
    const value: unknown = (options as Record<string, unknown>)[key];
    if (value === undefined) {
      if (spec.required) {
        throw new WorkerArgvError(
          spec.flag,
          `es-worker needs --${spec.flag} (option "${key}"): pass ${key}`,
        );
      }
      continue;
    }
    const ok =
      spec.type === 'number'
        ? typeof value === 'number' && Number.isFinite(value)
        : typeof value === 'string' && (spec.choices?.includes(value) ?? true);
    if (!ok) {
      const expected = spec.choices
        ? `one of ${spec.choices.join(', ')}`
        : spec.type === 'number'
          ? 'a finite number'
          : 'a string';
      throw new WorkerArgvError(
        spec.flag,
        `es-worker --${spec.flag} (option "${key}") must be ${expected}, got ${JSON.stringify(value) ?? String(value)}`,
      );
    }
    const text = String(value);
    const problem = commandLineValueProblem(spec.flag, text, {
      name: (WORKER_NAME_OPTIONS as readonly string[]).includes(key),
    });
    if (problem) throw new WorkerArgvError(spec.flag, `es-worker ${problem}`);
    argv.push(`--${spec.flag}=${text}`);
  }
  return argv;
}

/**
 * The environment variables carrying `options` to a worker (for the options that have one:
 * scheduler URL and URL file, secret file, deployment, job id, restart count).
 * @throws {WorkerArgvError} for an option that has no environment variable.
 */
export function buildWorkerEnv(
  options: Partial<Pick<WorkerArgvInput, WorkerFlagName>>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    const spec = (WORKER_FLAGS as Record<string, WorkerFlagSpec>)[key];
    if (spec?.env === undefined) {
      throw new WorkerArgvError(key, `es-worker reads no environment variable for "${key}"`);
    }
    env[spec.env] = String(value);
  }
  return env;
}

/** A yargs option made from a {@link WorkerFlagSpec}. */
export interface WorkerYargsOption {
  type?: 'string' | 'number';
  describe: string;
  default?: string | number;
  choices?: readonly string[];
}

/**
 * The `es-worker` options for yargs' `.options()`, keyed by flag. Flags with choices have
 * no type (the help shows the choices). Required flags are checked after parsing (see
 * {@link missingWorkerFlag}), so the message can name the fix.
 */
export function workerYargsOptions(): Record<string, WorkerYargsOption> {
  const options: Record<string, WorkerYargsOption> = {};
  for (const [, spec] of SPECS) {
    options[spec.flag] = {
      ...(spec.choices ? { choices: spec.choices } : { type: spec.type }),
      describe: spec.describe,
      ...(spec.default === undefined ? {} : { default: spec.default }),
    };
  }
  return options;
}

/**
 * The options from what yargs parsed (keyed by flag), each absent flag taken from its
 * environment variable when it has one and that is set (numbers converted with `Number`).
 * Values are as parsed: range checks are the worker's.
 */
export function readWorkerArgv(
  parsed: Readonly<Record<string, unknown>>,
  env: NodeJS.ProcessEnv = {},
): WorkerArgv {
  const options: Record<string, unknown> = {};
  for (const [key, spec] of SPECS) {
    let value = parsed[spec.flag];
    if (value === undefined && spec.env !== undefined) {
      const text = env[spec.env];
      if (text !== undefined && text !== '') value = spec.type === 'number' ? Number(text) : text;
    }
    options[key] = value;
  }
  return options as WorkerArgv;
}

/**
 * The first required flag `argv` lacks, with the message naming the fix
 * (`--model is required: pass --model <path or hub id>`); undefined when none is missing.
 */
export function missingWorkerFlag(argv: WorkerArgv): { flag: string; message: string } | undefined {
  for (const [key, spec] of SPECS) {
    const value = (argv as Record<string, unknown>)[key];
    if (spec.required && (value === undefined || value === '')) {
      return {
        flag: spec.flag,
        message: `--${spec.flag} is required: pass --${spec.flag} ${spec.example ?? `<${key}>`}`,
      };
    }
  }
  return undefined;
}

/** Largest `--drain-grace` + `--kill-grace`: with the drain and deregister notices (2 s each at most) they fit SLURM's default KillWait of 30 s. */
const MAX_GRACES_SECONDS = 26;
/** The hand-over margin when none is given, for a drain grace this long. */
const DEFAULT_HANDOVER_MARGIN_SECONDS = 5;

/**
 * The `--handover-margin` a worker uses when none is given: 5 s, or half of
 * `--drain-grace` when that is shorter than 10 s (so a short grace still has a margin and
 * still waits for idle engines first).
 * @example
 * defaultHandoverMargin(15); // 5
 * defaultHandoverMargin(1); // 0.5
 */
export function defaultHandoverMargin(drainGraceSeconds: number): number {
  return Math.min(DEFAULT_HANDOVER_MARGIN_SECONDS, drainGraceSeconds / 2);
}

/** The drain timing of a worker, in seconds (its flags `--drain-grace`, `--kill-grace`, `--handover-margin`). */
export interface WorkerGraces {
  drainGraceSeconds: number;
  killGraceSeconds: number;
  /** Undefined: {@link defaultHandoverMargin}. */
  handoverMarginSeconds?: number | undefined;
}

/**
 * What is wrong with a worker's drain timing, naming the flag and the fix; undefined when
 * nothing is. One rule for the worker (its flags) and the scheduler (the flags it passes):
 * `--drain-grace` >= 0, `--kill-grace` > 0, the two add up to at most 26 s (SLURM's default
 * KillWait of 30 s, less the notices), and `0 <= --handover-margin < --drain-grace` (0 is
 * also accepted with `--drain-grace 0`: the hand-over then goes out just before the stop).
 * @example
 * workerGraceProblem({ drainGraceSeconds: 15, killGraceSeconds: 5, handoverMarginSeconds: 20 });
 * // { flag: 'handover-margin', message: '--handover-margin (20) must be shorter than ...' }
 */
export function workerGraceProblem(
  graces: WorkerGraces,
): { flag: 'drain-grace' | 'kill-grace' | 'handover-margin'; message: string } | undefined {
  const { drainGraceSeconds: grace, killGraceSeconds: killGrace } = graces;
  if (!(grace >= 0) || !(killGrace > 0) || grace + killGrace > MAX_GRACES_SECONDS) {
    return {
      flag: !(grace >= 0) || grace + killGrace > MAX_GRACES_SECONDS ? 'drain-grace' : 'kill-grace',
      message:
        `--drain-grace (${grace}) + --kill-grace (${killGrace}) seconds must be >= 0 and > 0 and ` +
        `add up to at most ${MAX_GRACES_SECONDS} to fit SLURM's default KillWait of 30 s, e.g. --drain-grace 15 --kill-grace 5`,
    };
  }
  const margin = graces.handoverMarginSeconds;
  if (margin === undefined) return undefined;
  if (!(margin >= 0) || !(margin < grace || margin === 0)) {
    const suggested = defaultHandoverMargin(grace);
    return {
      flag: 'handover-margin',
      message:
        `--handover-margin (${margin}) must be >= 0 and shorter than --drain-grace (${grace}): ` +
        `the hand-over happens that many seconds before the grace ends, so pass e.g. --handover-margin ${suggested}` +
        ` or a longer --drain-grace (at most ${MAX_GRACES_SECONDS} - --kill-grace)`,
    };
  }
  return undefined;
}
