import { SlurmError } from './errors.js';

/** A single-node SLURM job: everything the batch script says. */
export interface JobSpec {
  /** `--job-name`. */
  name: string;
  /** `--comment`, e.g. a unique tag that finds the job again after an ambiguous submit. */
  comment?: string;
  /**
   * `--gpus-per-node=N`: the job gets exactly N GPUs (with {@link JobSpec.wholeNodeGpus}, the
   * fewest GPUs a node must have).
   */
  gpusPerNode?: number;
  /**
   * Whole nodes with every GPU on them, for partitions whose nodes differ in GPU count:
   * `--exclusive` and `--gpus-per-node=<gpusPerNode>` (only nodes with at least that many
   * GPUs; the job gets all of them), and the command's step is given every GPU the job got
   * (`srun --gres=gpu:$SLURM_GPUS_ON_NODE`: SLURM gives a step of an exclusive job none of
   * the GPUs the job did not ask for by count). Needs `gpusPerNode`. Default false.
   */
  wholeNodeGpus?: boolean;
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
  /**
   * Paths the job checks on the node before anything else (set-up included). A missing one
   * ends the job at once, exit 1, with one line in its `.err` naming what, the path, the node
   * and the fix. Default: the command's own absolute paths, argv[0] (an executable) and
   * argv[1] when it is one (the script an interpreter such as `node` runs); `[]` checks
   * nothing.
   */
  requiredPaths?: RequiredPath[];
}

/** A path a job needs on its node (see {@link JobSpec.requiredPaths}). */
export interface RequiredPath {
  path: string;
  /** `executable`: a file that may be run; `file`: a file; `directory`. */
  kind: 'executable' | 'file' | 'directory';
  /** What it is, for the message (`node`, `the script node runs`). */
  what: string;
  /** The fix, for the message. Default {@link SHARED_PATH_HINT}. */
  hint?: string;
}

/** The fix printed for a missing path: where the job's programs must be. */
export const SHARED_PATH_HINT =
  'Node and the Elastic Serving checkout (built) must be on a file system shared with the ' +
  'login node, at the same path on every node';

function invalid(message: string): SlurmError {
  return new SlurmError(message, { code: 'slurm_invalid_spec', kind: 'permanent' });
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
  if (spec.wholeNodeGpus && spec.gpusPerNode === undefined) {
    throw invalid(
      'wholeNodeGpus needs gpusPerNode, the fewest GPUs a node must have: set gpusPerNode ' +
        '(e.g. the tensor parallel size), or leave wholeNodeGpus unset to ask for exactly gpusPerNode GPUs',
    );
  }
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
    ...(spec.exclusive || spec.wholeNodeGpus ? ['--exclusive'] : []),
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
  const required = spec.requiredPaths ?? commandPaths(spec.command);
  if (required.length > 0) {
    lines.push('# pre-flight: what the command needs must exist on this node');
    for (const need of required) lines.push(...preflight(need));
    lines.push('');
  }
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
  // A whole-node job's step gets every GPU of the job, not only the minimum it asked for.
  const stepGpus = spec.wholeNodeGpus ? ' --gres=gpu:"$SLURM_GPUS_ON_NODE"' : '';
  lines.push(`exec srun --ntasks=1${stepGpus} -- ${spec.command.map(shellQuote).join(' ')}`, '');
  return lines.join('\n');
}

/** The absolute paths of a command: its executable, and the script an interpreter runs. */
function commandPaths(command: readonly string[]): RequiredPath[] {
  const [program, script] = command;
  if (program === undefined || !program.startsWith('/')) return [];
  const name = program.slice(program.lastIndexOf('/') + 1);
  const paths: RequiredPath[] = [{ path: program, kind: 'executable', what: name }];
  if (script?.startsWith('/')) {
    paths.push({ path: script, kind: 'file', what: `the script ${name} runs` });
  }
  return paths;
}

const TESTS: Record<RequiredPath['kind'], (path: string) => string> = {
  executable: (path) => `[ ! -f ${path} ] || [ ! -x ${path} ]`,
  file: (path) => `[ ! -f ${path} ]`,
  directory: (path) => `[ ! -d ${path} ]`,
};

function preflight(need: RequiredPath): string[] {
  if (!need.path.startsWith('/')) {
    throw invalid(`requiredPaths: ${JSON.stringify(need.path)} is not an absolute path`);
  }
  const path = shellQuote(need.path);
  const found = need.kind === 'executable' ? 'not found (or not executable)' : 'not found';
  // In the job's .out (what `es logs <job>` shows) and its .err; SLURMD_NODENAME is the
  // node's name as squeue shows it.
  return [
    `if ${TESTS[need.kind](path)}; then`,
    `  es_missing=$(printf 'es: %s ${found} at %s on %s: %s' ${shellQuote(need.what)} ${path} "\${SLURMD_NODENAME:-$(hostname)}" ${shellQuote(need.hint ?? SHARED_PATH_HINT)})`,
    `  printf '%s\\n' "$es_missing"`,
    `  printf '%s\\n' "$es_missing" >&2`,
    '  exit 1',
    'fi',
  ];
}
