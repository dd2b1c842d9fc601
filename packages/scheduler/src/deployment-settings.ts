/**
 * One deployment's settings from its layers (flags, then the config file, then the
 * defaults), checked with the rules of the packages that own them: the name and the tensor
 * parallel split (`@es/pool`), the time limit (`@es/slurm`), command-line values and drain
 * graces (`@es/protocol`), the conda environment (the batch script's setup lines).
 */
import { tensorParallelSizes, type ScalingPolicy } from '@es/pool';
import {
  WORKER_FLAGS,
  commandLineValueProblem,
  workerGraceProblem,
  type EngineKind,
} from '@es/protocol';
import { parseDuration } from '@es/slurm';
import { pick, snake, type DeploymentInput } from './config-file.js';
import { condaEnvProblem } from './node-request.js';
import { ConfigError, DEFAULTS, type DeploymentSettings } from './settings.js';

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
  // The sbatch --time syntax, parsed as @es/slurm parses the times squeue prints.
  const seconds = parseDuration(value);
  if (seconds === undefined) {
    throw new ConfigError(
      `time limit "${value}" is not a SLURM time: use MM, HH:MM:SS or D-HH:MM:SS (e.g. 4:00:00)`,
      'timeLimit',
    );
  }
  if (seconds <= 0) throw new ConfigError(`time limit "${value}" must be positive`, 'timeLimit');
  return Math.ceil(seconds / 60);
}

/** `wholeNodeGpus` when on; whole nodes are exclusive, so `exclusive: false` contradicts it. */
function wholeNodeGpus(
  whole: boolean | undefined,
  exclusive: boolean | undefined,
): { wholeNodeGpus?: true } {
  if (!whole) return {};
  if (exclusive === false) {
    throw new ConfigError(
      'whole_node_gpus asks SLURM for whole nodes (--exclusive) but exclusive is false: ' +
        'drop "exclusive: false" (or --no-exclusive), or drop whole_node_gpus to ask for exactly gpus_per_node GPUs',
      'wholeNodeGpus',
    );
  }
  return { wholeNodeGpus: true };
}

function splitSlurmExtra(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const parts = Array.isArray(value) ? value : value.split(';');
  return parts.map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * The settings of deployment `index` from its `layers` (first given wins), or a
 * `ConfigError` naming the field; the engine defaults to `mock` on the local backend.
 */
export function buildDeployment(
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
  const sizes = tensorParallelSizes(gpusPerNode);
  if (!sizes.includes(tensorParallelSize)) {
    throw new ConfigError(
      `tensor_parallel_size ${tensorParallelSize} does not divide gpus_per_node ${gpusPerNode}: ` +
        `choose a tensor parallel size that divides ${gpusPerNode} (e.g. ${sizes.join(', ')})`,
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
    ...wholeNodeGpus(get('wholeNodeGpus'), get('exclusive')),
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
  applyScaling(deployment, get);
  if (timeLimit !== undefined && timeLimit !== '') {
    deployment.timeLimit = String(timeLimit);
    deployment.timeLimitMinutes = parseTimeLimit(timeLimit);
  }
  return deployment;
}

/**
 * `minNodes` and the scaling policy (`--min-nodes`, `--target-in-flight`, `--target-kv-cache`,
 * `--scale-window`, `--scale-up-delay`, `--scale-down-delay`; delays in seconds here, ms in
 * the pool's policy). Scaling fields without `minNodes` below `maxNodes` would do nothing:
 * that is an error naming the fix.
 */
function applyScaling(
  deployment: DeploymentSettings,
  get: <K extends keyof DeploymentInput>(key: K) => DeploymentInput[K],
): void {
  const minNodes = get('minNodes');
  if (minNodes !== undefined) {
    if (minNodes > deployment.maxNodes) {
      throw new ConfigError(
        `deployment "${deployment.name}": min_nodes ${minNodes} is more than max_nodes ${deployment.maxNodes}: lower --min-nodes or raise --max-nodes`,
        'minNodes',
      );
    }
    deployment.minNodes = minNodes;
  }
  const seconds = (key: 'scaleWindow' | 'scaleUpDelay' | 'scaleDownDelay') => {
    const value = get(key);
    return value === undefined ? undefined : Math.round(value * 1000);
  };
  const policy: Partial<ScalingPolicy> = {};
  const fields = {
    targetInFlight: get('targetInFlight'),
    targetKvCacheUsage: get('targetKvCache'),
    windowMs: seconds('scaleWindow'),
    upDelayMs: seconds('scaleUpDelay'),
    downDelayMs: seconds('scaleDownDelay'),
  };
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) Object.assign(policy, { [key]: value });
  }
  if (Object.keys(policy).length === 0) return;
  if ((deployment.minNodes ?? deployment.maxNodes) >= deployment.maxNodes) {
    const given = Object.keys(policy)[0]!;
    const flag = {
      targetInFlight: 'target-in-flight',
      targetKvCacheUsage: 'target-kv-cache',
      windowMs: 'scale-window',
      upDelayMs: 'scale-up-delay',
      downDelayMs: 'scale-down-delay',
    }[given];
    throw new ConfigError(
      `deployment "${deployment.name}": --${flag} has no effect without --min-nodes below --max-nodes (the deployment holds max_nodes whatever the load): set --min-nodes (e.g. 0 to scale to zero) or drop --${flag}`,
      'minNodes',
    );
  }
  deployment.scaling = policy;
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

function checkCommandLineValues(d: DeploymentSettings): void {
  const where = (flag: string, field: string) =>
    ` (deployment "${d.name}": --${flag} or "${snake(field)}" in the config file)`;
  for (const [field, flag, isName] of COMMAND_LINE_FIELDS) {
    const value = d[field];
    if (value === undefined) continue;
    const problem = commandLineValueProblem(flag, value, { name: isName });
    if (problem) throw new ConfigError(`${problem}${where(flag, field)}`, field);
  }
  const conda = d.condaEnv === undefined ? undefined : condaEnvProblem(d.condaEnv);
  if (conda) throw new ConfigError(`${conda}${where('conda-env', 'condaEnv')}`, 'condaEnv');
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

function sanitizeName(s: string): string {
  const cleaned = s.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return (cleaned || 'model').slice(0, 63);
}
