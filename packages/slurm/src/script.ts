import { SlurmError } from './errors.js';

/** A single-node SLURM job: everything the batch script says. */
export interface JobSpec {
  /** `--job-name`. */
  name: string;
  /** `--comment`, e.g. a unique tag that finds the job again after an ambiguous submit. */
  comment?: string;
  /** `--gpus-per-node`. */
  gpusPerNode?: number;
  /** `--time` in whole minutes. */
  timeLimitMinutes?: number;
  partition?: string;
  qos?: string;
  account?: string;
  constraint?: string;
  /** `--exclusive`. */
  exclusive?: boolean;
  /** true: `--requeue`, false: `--no-requeue`, unset: the cluster's default. */
  requeue?: boolean;
  /** Directory for the script and, by default, stdout/stderr (`%x-%j.out` / `.err`). */
  logDir: string;
  /** `--output` path (sbatch expands `%j`, `%x`, ...). Default `<logDir>/%x-%j.out`. */
  output?: string;
  /** `--error` path. Default `<logDir>/%x-%j.err`. */
  error?: string;
  /** `--signal`, e.g. `B:USR1@120`. */
  signal?: string;
  /** Extra `#SBATCH` flags, each one line, e.g. `--mem=0`. */
  extraSbatch?: string[];
  /** Shell lines run before the command (trusted configuration, e.g. `conda activate env`). */
  setup?: string[];
  /** Environment variables exported for the command. */
  env?: Record<string, string>;
  /** The command, argv[0] first. Runs as a job step: `exec srun --ntasks=1 -- argv...`. */
  command: string[];
}

function invalid(message: string): SlurmError {
  return new SlurmError(message, { code: 'SLURM_INVALID_SPEC', kind: 'permanent' });
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Newlines would start a new script line; NUL cannot be passed at all.
const LINE_BREAKING = /[\r\n\0]/;

/**
 * Quotes one word for bash: the shell sees exactly `value`, whatever it contains
 * (`$`, backticks, quotes, spaces, globs). Newlines are allowed and kept.
 */
export function shellQuote(value: string): string {
  if (value.includes('\0')) throw invalid('a shell word cannot contain NUL');
  if (value !== '' && /^[A-Za-z0-9_./:=@%+,-]+$/.test(value)) return value;
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

// sbatch reads `#SBATCH` lines with its own small parser: words split on blanks, `"..."`
// groups, a backslash escapes the next character and an unescaped `#` starts a comment.
// Nothing is shell-expanded, so `$` and backticks are plain characters here.
function sbatchQuote(field: string, value: string): string {
  if (LINE_BREAKING.test(value)) {
    throw invalid(`${field} cannot contain a line break or NUL: ${JSON.stringify(value)}`);
  }
  return `"${value.replace(/["\\#]/g, (c) => `\\${c}`)}"`;
}

function positiveInteger(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw invalid(`${field} must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * Renders a job spec into a bash batch script (pure). Every value is quoted so that model
 * paths with spaces or engine arguments with `$`, backticks or quotes arrive byte-exact in
 * the worker's argv and environment; only `setup` lines are shell code by design.
 *
 * @example
 * const script = renderBatchScript({
 *   name: 'es-llama',
 *   comment: 'es-llama-7f3a',
 *   gpusPerNode: 8,
 *   partition: 'low',
 *   requeue: true,
 *   logDir: '/scratch/es/logs',
 *   env: { HF_HOME: '/scratch/hf' },
 *   command: ['es-worker', '--model', '/models/Llama 3'],
 * });
 */
export function renderBatchScript(spec: JobSpec): string {
  if (spec.command.length === 0) throw invalid('command must not be empty');
  if (spec.name === '') throw invalid('name must not be empty');
  const logDir = spec.logDir.replace(/\/+$/, '') || '/';
  const sbatch: string[] = [
    `--job-name=${sbatchQuote('name', spec.name)}`,
    ...(spec.comment === undefined ? [] : [`--comment=${sbatchQuote('comment', spec.comment)}`]),
    '--nodes=1',
    ...(spec.gpusPerNode === undefined
      ? []
      : [`--gpus-per-node=${positiveInteger('gpusPerNode', spec.gpusPerNode)}`]),
    ...(spec.timeLimitMinutes === undefined
      ? []
      : [`--time=${positiveInteger('timeLimitMinutes', spec.timeLimitMinutes)}`]),
    ...(spec.partition === undefined
      ? []
      : [`--partition=${sbatchQuote('partition', spec.partition)}`]),
    ...(spec.qos === undefined ? [] : [`--qos=${sbatchQuote('qos', spec.qos)}`]),
    ...(spec.account === undefined ? [] : [`--account=${sbatchQuote('account', spec.account)}`]),
    ...(spec.constraint === undefined
      ? []
      : [`--constraint=${sbatchQuote('constraint', spec.constraint)}`]),
    ...(spec.exclusive ? ['--exclusive'] : []),
    ...(spec.requeue === undefined ? [] : [spec.requeue ? '--requeue' : '--no-requeue']),
    `--output=${sbatchQuote('output', spec.output ?? `${logDir}/%x-%j.out`)}`,
    `--error=${sbatchQuote('error', spec.error ?? `${logDir}/%x-%j.err`)}`,
    ...(spec.signal === undefined ? [] : [`--signal=${sbatchQuote('signal', spec.signal)}`]),
    ...(spec.extraSbatch ?? []).map((line) => {
      if (LINE_BREAKING.test(line)) {
        throw invalid(`extraSbatch lines cannot contain a line break: ${JSON.stringify(line)}`);
      }
      return line.trim();
    }),
  ];
  const lines = ['#!/bin/bash', ...sbatch.map((flag) => `#SBATCH ${flag}`), ''];
  if (spec.setup?.length) lines.push('# set-up', ...spec.setup, '');
  const env = Object.entries(spec.env ?? {});
  for (const [name, value] of env) {
    if (!ENV_NAME.test(name))
      throw invalid(`invalid environment variable name: ${JSON.stringify(name)}`);
    lines.push(`export ${name}=${shellQuote(value)}`);
  }
  if (env.length) lines.push('');
  // `exec srun`: the worker becomes a job step, so it gets SIGTERM on scancel and on
  // preemption, and the batch script's shell does not linger as a parent.
  lines.push(`exec srun --ntasks=1 -- ${spec.command.map(shellQuote).join(' ')}`, '');
  return lines.join('\n');
}
