/**
 * The config file: the fields it may hold, in the seed's snake_case (`max_nodes`) or
 * camelCase (`maxNodes`), scheduler settings at the top level and either the seed's flat
 * deployment fields or a `deployments` array. A file the original tool wrote (its
 * `save_json`: every key, `null` for unset ones, `project_root`) loads as it is: `null`
 * means unset, and an unknown key is an error that names the closest known one.
 * Everything is validated with valibot and an invalid value names the field, what was
 * expected and what was received.
 */
import { readFileSync } from 'node:fs';
import { DEPLOYMENT_NAME, ROUTING_POLICIES } from '@es/pool';
import { ENGINE_KINDS } from '@es/protocol';
import * as v from 'valibot';
import { BACKENDS, ConfigError } from './settings.js';

const positiveInt = v.pipe(v.number(), v.integer(), v.minValue(1));
const name = v.pipe(
  v.string(),
  v.regex(DEPLOYMENT_NAME, 'letters, digits, ".", "_" or "-", at most 63'),
);

/** The fields of one deployment (flat at the top level, or each of `deployments`). */
export const deploymentFields = {
  name: v.optional(name),
  model: v.optional(v.pipe(v.string(), v.minLength(1))),
  servedModelName: v.optional(v.pipe(v.string(), v.minLength(1))),
  engine: v.optional(v.picklist(ENGINE_KINDS)),
  maxNodes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  minNodes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  targetInFlight: v.optional(v.pipe(v.number(), v.gtValue(0))),
  targetKvCache: v.optional(v.pipe(v.number(), v.gtValue(0), v.maxValue(1))),
  scaleWindow: v.optional(v.pipe(v.number(), v.minValue(0))),
  scaleUpDelay: v.optional(v.pipe(v.number(), v.minValue(0))),
  scaleDownDelay: v.optional(v.pipe(v.number(), v.minValue(0))),
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
  wholeNodeGpus: v.optional(v.boolean()),
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
  controlPort: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  proxyProcesses: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(64))),
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
  releaseRequeued: v.optional(v.boolean()),
  exposeSelectedEndpoint: v.optional(v.boolean()),
  maxContinuations: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  stallTimeout: v.optional(v.pipe(v.number(), v.minValue(0))),
  maxConnections: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  // The largest accepted body (32 MiB), charged 4 times its size, must fit the budget.
  bodyBudgetMb: v.optional(v.pipe(v.number(), v.minValue(128))),
  clientIdleTimeout: v.optional(v.pipe(v.number(), v.minValue(0))),
  // Checked by resolveConfig, naming the flag and its range.
  coldStartWait: v.optional(v.number()),
  projectRoot: v.optional(v.string()),
};

/** Fields accepted in a config file (after snake_case → camelCase). */
export const FileSchema = v.strictObject({
  ...schedulerFields,
  ...deploymentFields,
  deployments: v.optional(v.array(v.strictObject(deploymentFields))),
});

/** What the command line may set (already camelCase, from yargs). */
export type CliOverrides = Partial<v.InferOutput<typeof FileSchema>> & { config?: string };

/** A validated config file (or the flags, in the same shape). */
export type FileConfig = v.InferOutput<typeof FileSchema>;
/** One layer (flags, file) of a deployment's fields. */
export type DeploymentInput = v.InferOutput<
  v.StrictObjectSchema<typeof deploymentFields, undefined>
>;

/** The first of `values` that is defined: the layer (flags, file) that sets a field. */
export const pick = <T>(...values: (T | undefined)[]): T | undefined =>
  values.find((x) => x !== undefined);

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

/** `maxNodes` → `max_nodes`: how the seed's files spell a key. */
export const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

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

/** A `ConfigError` listing every valibot issue of `source` with its field. */
export function describeIssues(
  source: string,
  issues: readonly v.BaseIssue<unknown>[],
): ConfigError {
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
