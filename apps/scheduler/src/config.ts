/**
 * Scheduler configuration: defaults < JSON config file < command-line flags.
 *
 * The config file may use the seed's snake_case keys (`max_nodes`) or camelCase
 * (`maxNodes`); it holds scheduler settings at the top level and either the seed's flat
 * deployment fields or a `deployments` array. A file the original tool wrote (its
 * `save_json`: every key, `null` for unset ones, `project_root`) loads as it is: `null`
 * means unset, and an unknown key is an error that names the closest known one.
 * Everything is validated with valibot and an invalid value names the field, what was
 * expected and what was received.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  ENGINE_KINDS,
  WORKER_FLAGS,
  commandLineValueProblem,
  isSecretFileError,
  readKeyFile,
  workerGraceProblem,
  type EngineKind,
} from '@es/protocol';
import { parseCorsOrigin } from '@es/proxy';
import * as v from 'valibot';

export const BACKENDS = ['auto', 'slurm', 'local'] as const;
export const ROUTING_POLICIES = ['least-outstanding', 'round-robin', 'prefix-affinity'] as const;

export type Backend = (typeof BACKENDS)[number];

/** Everything that describes one served model. */
export interface DeploymentSettings {
  name: string;
  model: string;
  servedModelName?: string;
  engine: EngineKind;
  maxNodes: number;
  gpusPerNode: number;
  tensorParallelSize: number;
  gpuMemoryUtilization: number;
  maxModelLen?: number;
  engineExtraArgs: string;
  workerBasePort: number;
  routing: (typeof ROUTING_POLICIES)[number];
  /** SLURM time limit as given (`4:00:00`, `1-00:00:00`, `90`). */
  timeLimit?: string;
  timeLimitMinutes?: number;
  partition?: string;
  qos?: string;
  account?: string;
  constraint?: string;
  exclusive: boolean;
  /** Extra sbatch flags, one per entry (the CLI's `--slurm-extra` is `;`-separated). */
  slurmExtra: string[];
  condaEnv?: string;
  /** A virtualenv to activate on the nodes (alternative to `condaEnv`). */
  venvPath?: string;
  /** Extra shell lines run in the batch script before the worker starts. */
  setup: string[];
  /**
   * The workers' `--drain-grace` (seconds in-flight requests may finish after SIGTERM);
   * unset: the worker's default, 15. Keep it a few seconds under the partition's
   * preemption GraceTime.
   */
  drainGrace?: number;
  /**
   * The workers' `--handover-margin` (seconds before the end of the drain grace at which
   * the generations still running are continued elsewhere); unset: the worker's default
   * (5, or half of the drain grace when that is under 10).
   */
  handoverMargin?: number;
  /**
   * The seed's `enable_prefix_caching`: `false` adds the engine's switch that turns its
   * prefix cache off (vLLM `--no-enable-prefix-caching`, SGLang `--disable-radix-cache`) to
   * `engineExtraArgs`; unset or `true`: the engine's default (on).
   */
  enablePrefixCaching?: boolean;
}

export interface SchedulerSettings {
  host: string;
  port: number;
  /**
   * Port of the worker protocol's own listener, served from a thread of its own so that
   * heartbeats are answered however busy the client port is (0 = any free port; workers
   * find it in `<log-dir>/worker-url`).
   */
  workerPort: number;
  backend: Backend;
  /**
   * Client keys for `/v1/*` (`--api-key`, the lines of `--api-key-file`, `ES_API_KEYS` and
   * `ES_API_KEY`, comma-separated); empty = no client auth.
   */
  apiKeys: string[];
  /**
   * Origins whose web pages may call `/v1/*` from a browser (`--cors-origin`, repeatable;
   * `cors_origin` in a file, a string or a list), normalised, `*` for any; empty = CORS off.
   */
  corsOrigins: string[];
  /**
   * Admin key (`--admin-key`, `--admin-key-file`, `ES_ADMIN_KEY`); when unset, the admin
   * token derived from the secret is accepted.
   */
  adminKey?: string;
  /** Shared secret file (0600) from which worker and engine keys are derived. */
  secretFile?: string;
  logDir: string;
  heartbeatTimeoutS: number;
  healthCheckIntervalS: number;
  nodeAcquireIntervalS: number;
  /** A job that runs but registers no worker within this many seconds is cancelled. */
  startupTimeoutS: number;
  /** Number of simulated nodes for the local backend. */
  localNodes: number;
  /** Identifies this scheduler's jobs (job name prefix), so a restart re-adopts them. */
  schedulerId: string;
  /** Cancel all of this scheduler's jobs when it stops (default: leave them to be re-adopted). */
  cancelOnExit: boolean;
  /** Send engine addresses to clients as `x-elastic-selected-endpoint` (default false). */
  exposeSelectedEndpoint: boolean;
  /** Continuations of one cut generation on other workers; 0 turns continuation off. */
  maxContinuations: number;
  /** A started generation silent this long is cut and continued elsewhere (0 = never). */
  stallTimeoutS: number;
  /** Open connections to the scheduler's port at most (0 = no cap). */
  maxConnections: number;
  /** MiB of memory for request bodies, all requests together (each charged 4 × its size). */
  bodyBudgetMb: number;
  /** A client that reads nothing of its response this long is cut (0 = never). */
  clientIdleTimeoutS: number;
  /**
   * The seed's `project_root`: the checkout of this project whose worker
   * (`<projectRoot>/apps/worker/dist/cli.mjs`) the node jobs run, at the same path on the
   * nodes (a shared file system). Unset: the checkout this scheduler runs from. A
   * `project_root` without that file (the original Python tool's checkout, as its config
   * files name it) is ignored with a warning.
   */
  projectRoot?: string;
  /** Things the operator should know that do not stop the start (logged as warnings). */
  warnings?: string[];
  deployments: DeploymentSettings[];
}

/** A configuration problem, with the field that is wrong and how to fix it. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'ES_CONFIG_INVALID';
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** Where a checkout of this project keeps the worker binary the node jobs run. */
export const WORKER_CLI_PATH = 'apps/worker/dist/cli.mjs';

const DEFAULTS = {
  port: 8780,
  backend: 'auto' as Backend,
  logDir: 'logs',
  /** The least heartbeat timeout: the default is max(this, 3 × the interval). */
  heartbeatTimeoutS: 30,
  maxContinuations: 3,
  stallTimeoutS: 30,
  maxConnections: 16_384,
  bodyBudgetMb: 128,
  clientIdleTimeoutS: 60,
  healthCheckIntervalS: 5,
  nodeAcquireIntervalS: 10,
  startupTimeoutS: 1800,
  localNodes: 4,
  schedulerId: 'es',
  cancelOnExit: false,
  exposeSelectedEndpoint: false,
  engine: 'vllm' as EngineKind,
  maxNodes: 1,
  gpusPerNode: 8,
  tensorParallelSize: 1,
  gpuMemoryUtilization: 0.9,
  engineExtraArgs: '',
  workerBasePort: 8001,
  routing: 'least-outstanding' as const,
};

const positiveInt = v.pipe(v.number(), v.integer(), v.minValue(1));
const name = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, ".", "_" or "-", at most 63'),
);

const deploymentFields = {
  name: v.optional(name),
  model: v.optional(v.pipe(v.string(), v.minLength(1))),
  servedModelName: v.optional(v.pipe(v.string(), v.minLength(1))),
  engine: v.optional(v.picklist(ENGINE_KINDS)),
  maxNodes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  gpusPerNode: v.optional(positiveInt),
  tensorParallelSize: v.optional(positiveInt),
  gpuMemoryUtilization: v.optional(v.pipe(v.number(), v.gtValue(0), v.maxValue(1))),
  maxModelLen: v.optional(positiveInt),
  engineExtraArgs: v.optional(v.string()),
  workerBasePort: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535))),
  routing: v.optional(v.picklist(ROUTING_POLICIES)),
  timeLimit: v.optional(v.union([v.string(), v.number()])),
  partition: v.optional(v.string()),
  qos: v.optional(v.string()),
  account: v.optional(v.string()),
  constraint: v.optional(v.string()),
  exclusive: v.optional(v.boolean()),
  slurmExtra: v.optional(v.union([v.string(), v.array(v.string())])),
  condaEnv: v.optional(v.string()),
  venvPath: v.optional(v.string()),
  setup: v.optional(v.array(v.string())),
  drainGrace: v.optional(v.pipe(v.number(), v.minValue(0))),
  handoverMargin: v.optional(v.pipe(v.number(), v.minValue(0))),
  enablePrefixCaching: v.optional(v.boolean()),
};

const schedulerFields = {
  host: v.optional(v.pipe(v.string(), v.minLength(1))),
  port: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  workerPort: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  backend: v.optional(v.picklist(BACKENDS)),
  apiKeys: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
  apiKey: v.optional(v.union([v.string(), v.array(v.string())])),
  apiKeyFile: v.optional(v.union([v.string(), v.array(v.string())])),
  corsOrigin: v.optional(v.union([v.string(), v.array(v.string())])),
  adminKey: v.optional(v.pipe(v.string(), v.minLength(1))),
  adminKeyFile: v.optional(v.pipe(v.string(), v.minLength(1))),
  secretFile: v.optional(v.string()),
  logDir: v.optional(v.string()),
  heartbeatTimeout: v.optional(v.pipe(v.number(), v.gtValue(0))),
  healthCheckInterval: v.optional(v.pipe(v.number(), v.gtValue(0))),
  nodeAcquireInterval: v.optional(v.pipe(v.number(), v.gtValue(0))),
  startupTimeout: v.optional(v.pipe(v.number(), v.gtValue(0))),
  localNodes: v.optional(positiveInt),
  schedulerId: v.optional(name),
  cancelOnExit: v.optional(v.boolean()),
  exposeSelectedEndpoint: v.optional(v.boolean()),
  maxContinuations: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  stallTimeout: v.optional(v.pipe(v.number(), v.minValue(0))),
  maxConnections: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  // The largest accepted body (32 MiB), charged 4 times its size, must fit the budget.
  bodyBudgetMb: v.optional(v.pipe(v.number(), v.minValue(128))),
  clientIdleTimeout: v.optional(v.pipe(v.number(), v.minValue(0))),
  projectRoot: v.optional(v.string()),
};

/** Fields accepted in a config file (after snake_case → camelCase). */
const FileSchema = v.strictObject({
  ...schedulerFields,
  ...deploymentFields,
  deployments: v.optional(v.array(v.strictObject(deploymentFields))),
});

/** What the command line may set (already camelCase, from yargs). */
export type CliOverrides = Partial<v.InferOutput<typeof FileSchema>> & { config?: string };

type FileConfig = v.InferOutput<typeof FileSchema>;
type DeploymentInput = v.InferOutput<v.StrictObjectSchema<typeof deploymentFields, undefined>>;

const camel = (key: string) => key.replace(/[_-]([a-z])/g, (_, c: string) => c.toUpperCase());

function camelKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, inner]) => [camel(k), k === 'env' ? inner : camelKeys(inner)]),
    );
  }
  return value;
}

const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Levenshtein distance between `a` and `b`. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        (previous[j] ?? 0) + 1,
        (current[j - 1] ?? 0) + 1,
        (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The candidate closest to `name` by edit distance, or undefined when none is close enough
 * to be a plausible misspelling (more than a third of the longer name differs, at least 2).
 */
export function closest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const longer = Math.max(name.length, best?.length ?? 0);
  return bestDistance <= Math.max(2, Math.floor(longer / 3)) ? best : undefined;
}

const TOP_LEVEL_KEYS = [
  ...Object.keys(schedulerFields),
  ...Object.keys(deploymentFields),
  'deployments',
];
const DEPLOYMENT_KEYS = Object.keys(deploymentFields);

/**
 * Unknown keys of a raw config object (as the file spells them), each with the closest
 * known key in the same spelling (snake_case or camelCase).
 */
function unknownKeys(raw: unknown): { path: string; key: string; suggestion?: string }[] {
  const out: { path: string; key: string; suggestion?: string }[] = [];
  const check = (value: unknown, known: string[], prefix: string) => {
    if (!value || typeof value !== 'object' || Array.isArray(value)) return;
    for (const key of Object.keys(value)) {
      if (known.includes(camel(key))) continue;
      const spelled = /[A-Z]/.test(key) ? known : known.map(snake);
      const suggestion = closest(key, spelled);
      out.push({ path: `${prefix}${key}`, key, ...(suggestion ? { suggestion } : {}) });
    }
  };
  check(raw, TOP_LEVEL_KEYS, '');
  const deployments = (raw as { deployments?: unknown } | null)?.deployments;
  if (Array.isArray(deployments)) {
    deployments.forEach((d, i) => check(d, DEPLOYMENT_KEYS, `deployments.${i}.`));
  }
  return out;
}

/**
 * The seed writes unset keys as `null`, and `""` for its text keys' defaults (`model`,
 * `constraint`, `conda_env`, `project_root` ...): drop both (in objects, at every depth)
 * so they mean "unset".
 */
function withoutUnset(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutUnset);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, inner]) => inner !== null && inner !== '')
        .map(([k, inner]) => [k, withoutUnset(inner)]),
    );
  }
  return value;
}

function issuePath(issue: v.BaseIssue<unknown>): string {
  return (issue.path ?? []).map((p) => String(p.key)).join('.') || '(top level)';
}

function describeIssues(source: string, issues: readonly v.BaseIssue<unknown>[]): ConfigError {
  const lines = issues.map((i) => {
    const expected = i.expected ? `expected ${i.expected}` : i.message;
    return `  ${issuePath(i)}: ${expected}, received ${i.received}`;
  });
  const first = issues[0];
  return new ConfigError(
    `invalid ${source}:\n${lines.join('\n')}\nFix these fields (see examples/ for a complete config).`,
    first ? issuePath(first) : undefined,
  );
}

/** Read and validate a JSON config file. */
export function loadConfigFile(path: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `cannot read config file ${path}: ${(error as Error).message}. Pass an existing file to --config.`,
      'config',
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(
      `config file ${path} is not valid JSON: ${(error as Error).message}`,
      'config',
    );
  }
  const unknown = unknownKeys(raw);
  if (unknown.length > 0) {
    const lines = unknown.map(
      (u) => `  ${u.path}: unknown key${u.suggestion ? `; did you mean "${u.suggestion}"?` : ''}`,
    );
    throw new ConfigError(
      `config file ${path} has ${unknown.length === 1 ? 'a key' : 'keys'} the scheduler does not know:\n${lines.join('\n')}\n` +
        "Rename or remove it (the README lists every key; the original tool's keys are all accepted).",
      unknown[0]?.path,
    );
  }
  const result = v.safeParse(FileSchema, camelKeys(withoutUnset(raw)));
  if (!result.success) throw describeIssues(`config file ${path}`, result.issues);
  return result.output;
}

/**
 * Parse a SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)
 * into whole minutes (rounded up, as SLURM does).
 */
export function parseTimeLimit(value: string | number): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value > 0) return value;
    throw new ConfigError(
      `time limit must be a positive number of minutes, got ${value}`,
      'timeLimit',
    );
  }
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(value.trim());
  if (!m) {
    throw new ConfigError(
      `time limit "${value}" is not a SLURM time: use MM, HH:MM:SS or D-HH:MM:SS (e.g. 4:00:00)`,
      'timeLimit',
    );
  }
  const [, d, a, b, c] = m;
  const n = (s: string | undefined) => (s === undefined ? 0 : Number(s));
  let seconds: number;
  if (d !== undefined) {
    // D-HH[:MM[:SS]]
    seconds = n(d) * 86400 + n(a) * 3600 + n(b) * 60 + n(c);
  } else if (c !== undefined) {
    seconds = n(a) * 3600 + n(b) * 60 + n(c);
  } else if (b !== undefined) {
    seconds = n(a) * 60 + n(b);
  } else {
    seconds = n(a) * 60;
  }
  if (seconds <= 0) throw new ConfigError(`time limit "${value}" must be positive`, 'timeLimit');
  return Math.ceil(seconds / 60);
}

const pick = <T>(...values: (T | undefined)[]): T | undefined =>
  values.find((x) => x !== undefined);

function splitSlurmExtra(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const parts = Array.isArray(value) ? value : value.split(';');
  return parts.map((s) => s.trim()).filter((s) => s.length > 0);
}

function buildDeployment(
  layers: DeploymentInput[],
  index: number,
  defaultBackendIsLocal: boolean,
): DeploymentSettings {
  const get = <K extends keyof DeploymentInput>(key: K) =>
    pick(...layers.map((l) => l[key])) as DeploymentInput[K];
  const model = get('model');
  if (!model) {
    throw new ConfigError(
      `deployment ${index}: no model given. Pass --model <path or hub id> (or "model" in the config file).`,
      index === 0 ? 'model' : `deployments.${index}.model`,
    );
  }
  const engine = get('engine') ?? (defaultBackendIsLocal ? 'mock' : DEFAULTS.engine);
  const gpusPerNode = get('gpusPerNode') ?? DEFAULTS.gpusPerNode;
  const tensorParallelSize = get('tensorParallelSize') ?? DEFAULTS.tensorParallelSize;
  if (gpusPerNode % tensorParallelSize !== 0) {
    throw new ConfigError(
      `tensor_parallel_size ${tensorParallelSize} does not divide gpus_per_node ${gpusPerNode}: ` +
        `choose a tensor parallel size that divides ${gpusPerNode} (e.g. ${divisors(gpusPerNode).join(', ')})`,
      'tensorParallelSize',
    );
  }
  const servedModelName = get('servedModelName');
  const enablePrefixCaching = get('enablePrefixCaching');
  const fallbackName = (servedModelName ?? model).split('/').filter(Boolean).pop() ?? 'model';
  const timeLimit = get('timeLimit');
  const deployment: DeploymentSettings = {
    name: get('name') ?? sanitizeName(fallbackName),
    model,
    engine,
    maxNodes: get('maxNodes') ?? DEFAULTS.maxNodes,
    gpusPerNode,
    tensorParallelSize,
    gpuMemoryUtilization: get('gpuMemoryUtilization') ?? DEFAULTS.gpuMemoryUtilization,
    engineExtraArgs: withPrefixCaching(
      get('engineExtraArgs') ?? DEFAULTS.engineExtraArgs,
      engine,
      enablePrefixCaching,
    ),
    workerBasePort: get('workerBasePort') ?? DEFAULTS.workerBasePort,
    routing: get('routing') ?? DEFAULTS.routing,
    exclusive: get('exclusive') ?? false,
    slurmExtra: splitSlurmExtra(get('slurmExtra')),
    setup: get('setup') ?? [],
  };
  const optional = {
    servedModelName,
    maxModelLen: get('maxModelLen'),
    partition: get('partition'),
    qos: get('qos'),
    account: get('account'),
    constraint: get('constraint'),
    condaEnv: get('condaEnv'),
    venvPath: get('venvPath'),
    drainGrace: get('drainGrace'),
    handoverMargin: get('handoverMargin'),
    enablePrefixCaching,
  };
  for (const [key, value] of Object.entries(optional)) {
    if (value !== undefined && value !== '') Object.assign(deployment, { [key]: value });
  }
  checkCommandLineValues(deployment);
  // The rule the worker applies to the flags it gets (`workerGraceProblem`), checked here
  // so a wrong value fails at start-up, not in every job.
  const graces = workerGraceProblem({
    drainGraceSeconds: deployment.drainGrace ?? Number(WORKER_FLAGS.drainGraceSeconds.default),
    killGraceSeconds: Number(WORKER_FLAGS.killGraceSeconds.default),
    handoverMarginSeconds: deployment.handoverMargin,
  });
  if (graces) {
    const field = graces.flag === 'handover-margin' ? 'handoverMargin' : 'drainGrace';
    throw new ConfigError(
      `${graces.message} (deployment "${deployment.name}": --${graces.flag} or "${field}" in the config file)`,
      field,
    );
  }
  if (timeLimit !== undefined && timeLimit !== '') {
    deployment.timeLimit = String(timeLimit);
    deployment.timeLimitMinutes = parseTimeLimit(timeLimit);
  }
  return deployment;
}

/**
 * The deployment fields that reach a command line (the worker's argv, the batch script),
 * as `--flag=value` words, quoted: none may hold a control character (a newline would start
 * a new line of the batch script), and a name may not start with `-`; a conda environment
 * is a plain name or an absolute path.
 */
const COMMAND_LINE_FIELDS = [
  ['model', 'model', true],
  ['servedModelName', 'served-model-name', true],
  ['engineExtraArgs', 'engine-extra-args', false],
  ['venvPath', 'venv-path', true],
] as const;
const CONDA_ENV = /^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]*|\/[A-Za-z0-9_.+/-]+)$/;

function checkCommandLineValues(d: DeploymentSettings): void {
  const where = (flag: string, field: string) =>
    ` (deployment "${d.name}": --${flag} or "${snake(field)}" in the config file)`;
  for (const [field, flag, isName] of COMMAND_LINE_FIELDS) {
    const value = d[field];
    if (value === undefined) continue;
    const problem = commandLineValueProblem(flag, value, { name: isName });
    if (problem) throw new ConfigError(`${problem}${where(flag, field)}`, field);
  }
  if (d.condaEnv !== undefined && !CONDA_ENV.test(d.condaEnv)) {
    throw new ConfigError(
      `--conda-env ${JSON.stringify(d.condaEnv)} is not a conda environment: pass its name (letters, digits, "_", ".", "+", "-", not starting with "-") or its absolute path${where('conda-env', 'condaEnv')}`,
      'condaEnv',
    );
  }
}

/** The engine switch that turns its prefix cache off, for the seed's `enable_prefix_caching: false`. */
const PREFIX_CACHE_OFF: Partial<Record<EngineKind, string>> = {
  vllm: '--no-enable-prefix-caching',
  sglang: '--disable-radix-cache',
};

function withPrefixCaching(
  extraArgs: string,
  engine: EngineKind,
  enabled: boolean | undefined,
): string {
  const off = PREFIX_CACHE_OFF[engine];
  if (enabled !== false || off === undefined || extraArgs.split(/\s+/).includes(off)) {
    return extraArgs;
  }
  return extraArgs.trim() === '' ? off : `${extraArgs.trim()} ${off}`;
}

function divisors(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
}

function sanitizeName(s: string): string {
  const cleaned = s.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return (cleaned || 'model').slice(0, 63);
}

/**
 * Resolve the effective configuration: command-line flags beat the config file, which
 * beats the defaults.
 */
export function resolveConfig(
  cli: CliOverrides,
  env: NodeJS.ProcessEnv = process.env,
): SchedulerSettings {
  const cliChecked = v.safeParse(
    v.partial(FileSchema),
    stripUndefined({ ...cli, config: undefined }),
  );
  if (!cliChecked.success) throw describeIssues('command-line flags', cliChecked.issues);
  const file: FileConfig = cli.config ? loadConfigFile(cli.config) : {};
  const flags = cliChecked.output as FileConfig;
  const layers = [flags, file];
  const get = <K extends keyof FileConfig>(key: K) =>
    pick(...layers.map((l) => l[key])) as FileConfig[K];

  const backend = get('backend') ?? DEFAULTS.backend;
  const localish = backend === 'local';
  const cliDeployment = pickDeploymentFields(flags);
  const fileTop = pickDeploymentFields(file);
  let deployments: DeploymentSettings[];
  if (file.deployments && file.deployments.length > 0) {
    if (Object.keys(fileTop).length > 0) {
      throw new ConfigError(
        `config file ${cli.config}: put deployment fields (${Object.keys(fileTop).join(', ')}) inside "deployments", not at the top level, when "deployments" is used`,
        'deployments',
      );
    }
    if (file.deployments.length > 1 && Object.keys(cliDeployment).length > 0) {
      throw new ConfigError(
        `deployment flags (${Object.keys(cliDeployment)
          .map((k) => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()))
          .join(
            ', ',
          )}) are ambiguous with ${file.deployments.length} deployments in ${cli.config}: set them per deployment in the file`,
        'deployments',
      );
    }
    deployments = file.deployments.map((d, i) => buildDeployment([cliDeployment, d], i, localish));
  } else {
    deployments = [buildDeployment([cliDeployment, fileTop], 0, localish)];
  }
  const names = new Set<string>();
  for (const d of deployments) {
    if (names.has(d.name)) {
      throw new ConfigError(
        `two deployments are named "${d.name}": give each a unique "name"`,
        'deployments',
      );
    }
    names.add(d.name);
  }

  const apiKeys = [
    ...(get('apiKeys') ?? []),
    ...toArray(flags.apiKey ?? file.apiKey),
    ...toArray(flags.apiKeyFile ?? file.apiKeyFile).flatMap((f) =>
      keysOfFile(f, '--api-key-file (api_key_file)', 'apiKeyFile'),
    ),
    ...commaList(env.ES_API_KEYS),
    ...commaList(env.ES_API_KEY),
  ].filter((k) => k.length > 0);

  const settings: SchedulerSettings = {
    host: get('host') ?? (localish ? '127.0.0.1' : '0.0.0.0'),
    port: get('port') ?? DEFAULTS.port,
    workerPort: get('workerPort') ?? 0,
    backend,
    apiKeys: [...new Set(apiKeys)],
    corsOrigins: corsOrigins(toArray(get('corsOrigin'))),
    logDir: get('logDir') ?? DEFAULTS.logDir,
    ...heartbeatTiming(get('healthCheckInterval'), get('heartbeatTimeout')),
    nodeAcquireIntervalS: get('nodeAcquireInterval') ?? DEFAULTS.nodeAcquireIntervalS,
    startupTimeoutS: get('startupTimeout') ?? DEFAULTS.startupTimeoutS,
    localNodes: get('localNodes') ?? DEFAULTS.localNodes,
    schedulerId: get('schedulerId') ?? DEFAULTS.schedulerId,
    cancelOnExit: get('cancelOnExit') ?? DEFAULTS.cancelOnExit,
    exposeSelectedEndpoint: get('exposeSelectedEndpoint') ?? DEFAULTS.exposeSelectedEndpoint,
    maxContinuations: get('maxContinuations') ?? DEFAULTS.maxContinuations,
    stallTimeoutS: get('stallTimeout') ?? DEFAULTS.stallTimeoutS,
    maxConnections: get('maxConnections') ?? DEFAULTS.maxConnections,
    bodyBudgetMb: get('bodyBudgetMb') ?? DEFAULTS.bodyBudgetMb,
    clientIdleTimeoutS: get('clientIdleTimeout') ?? DEFAULTS.clientIdleTimeoutS,
    deployments,
  };
  const adminKey = adminKeyOf(flags) ?? adminKeyOf(file) ?? env.ES_ADMIN_KEY;
  if (adminKey) settings.adminKey = adminKey;
  const secretFile = get('secretFile') ?? env.ES_SECRET_FILE;
  if (secretFile) settings.secretFile = secretFile;
  if (settings.workerPort !== 0 && settings.workerPort === settings.port) {
    throw new ConfigError(
      `--worker-port (worker_port) ${settings.workerPort} is --port too: the workers' listener needs a port of its own; pass another one, or 0 for any free port`,
      'workerPort',
    );
  }
  const warnings: string[] = [];
  const projectRoot = get('projectRoot');
  // "" is the original's default ("this checkout"), as unset.
  if (projectRoot !== undefined && projectRoot.trim() !== '') {
    const root = resolve(projectRoot);
    if (existsSync(join(root, WORKER_CLI_PATH))) {
      settings.projectRoot = root;
    } else {
      warnings.push(
        `project_root ${root} holds no ${WORKER_CLI_PATH} (the original tool's checkout?): ignored, ` +
          "the node jobs run this checkout's worker. Set --project-root (project_root) to this project's " +
          'checkout as the nodes see it, or leave it out (null).',
      );
    }
  }
  if (warnings.length > 0) settings.warnings = warnings;
  return settings;
}

/**
 * The health-check interval and heartbeat timeout. One given alone sets the other: the
 * timeout defaults to max(30, 3 × interval), the interval to min(5, timeout / 3), so any
 * one of the seed's flags works alone (`--health-check-interval 30` → timeout 90 s). Both
 * given: the timeout must be longer than the interval.
 */
export function heartbeatTiming(
  interval: number | undefined,
  timeout: number | undefined,
): { healthCheckIntervalS: number; heartbeatTimeoutS: number } {
  const healthCheckIntervalS =
    interval ??
    (timeout === undefined
      ? DEFAULTS.healthCheckIntervalS
      : Math.min(DEFAULTS.healthCheckIntervalS, timeout / 3));
  const heartbeatTimeoutS =
    timeout ?? Math.max(DEFAULTS.heartbeatTimeoutS, 3 * healthCheckIntervalS);
  if (heartbeatTimeoutS <= healthCheckIntervalS) {
    throw new ConfigError(
      `--heartbeat-timeout (heartbeat_timeout) ${heartbeatTimeoutS}s must be longer than ` +
        `--health-check-interval (health_check_interval) ${healthCheckIntervalS}s, ideally 3× or more: ` +
        'raise the timeout, or leave it out to get max(30, 3 × the interval)',
      'heartbeatTimeout',
    );
  }
  return { healthCheckIntervalS, heartbeatTimeoutS };
}

function corsOrigins(values: string[]): string[] {
  const out = values.map((value) => {
    try {
      return parseCorsOrigin(value);
    } catch (error) {
      throw new ConfigError(
        `--cors-origin (cors_origin): ${(error as Error).message}`,
        'corsOrigin',
      );
    }
  });
  return [...new Set(out)];
}

/** The keys of a key file, or a `ConfigError` on `field` naming `flag`, the file and the fix. */
function keysOfFile(file: string, flag: string, field: string): string[] {
  try {
    return readKeyFile(file);
  } catch (error) {
    if (isSecretFileError(error)) throw new ConfigError(`${flag}: ${error.message}`, field);
    throw error;
  }
}

/** A layer's admin key: `adminKey`, or the one key of `adminKeyFile` (not both). */
function adminKeyOf(layer: FileConfig): string | undefined {
  if (layer.adminKeyFile === undefined) return layer.adminKey;
  const flag = '--admin-key-file (admin_key_file)';
  if (layer.adminKey !== undefined) {
    throw new ConfigError(
      `${flag} and --admin-key (admin_key) are both given: pass one of them (the file keeps the key out of ps)`,
      'adminKeyFile',
    );
  }
  const keys = keysOfFile(layer.adminKeyFile, flag, 'adminKeyFile');
  if (keys.length > 1) {
    throw new ConfigError(
      `${flag}: ${layer.adminKeyFile} holds ${keys.length} keys: an admin key file holds one (other lines blank or # comments)`,
      'adminKeyFile',
    );
  }
  return keys[0];
}

function commaList(value: string | undefined): string[] {
  return value ? value.split(',').map((k) => k.trim()) : [];
}

function toArray(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) as Partial<T>;
}

function pickDeploymentFields(o: FileConfig): DeploymentInput {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(deploymentFields)) {
    const value = (o as Record<string, unknown>)[key];
    if (value !== undefined) out[key] = value;
  }
  return out as DeploymentInput;
}
