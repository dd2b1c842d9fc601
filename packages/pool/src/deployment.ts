import { commandLineValueProblem, type EngineKind } from '@es/protocol';
import type { ClusterOptions } from './provider.js';
import type { ChatParsers, DeploymentView, RoutingPolicy } from './view.js';
import { PoolError } from './errors.js';
import { validateScaling, type ScalingPolicy } from './scaling.js';

/** One served model: what to run, on how many nodes, and how to route to it. */
export interface DeploymentConfig {
  /** Unique name: letters, digits, `.`, `_`, `-` (part of the job name, keep it short). */
  name: string;
  /** Model path or hub id the engines load. */
  model: string;
  /** Name clients send as `model` (defaults to the model path). */
  servedModelName?: string;
  /** More names clients may send as `model`. */
  aliases?: string[];
  engine: EngineKind;
  /** GPUs per engine instance. Must divide `gpusPerNode`. */
  tensorParallelSize: number;
  /** GPUs each node job asks for. */
  gpusPerNode: number;
  /** Most node jobs held at once (pending + running + being submitted); 0 pauses. */
  maxNodes: number;
  /**
   * Fewest node jobs held whatever the demand (default `maxNodes`: always hold `maxNodes`,
   * the greedy behaviour). Below `maxNodes`, the deployment scales with its load between the
   * two (see `scaling` and `decideScale`); 0 lets it scale to zero and back on a request.
   */
  minNodes?: number;
  /** How the deployment follows its load between `minNodes` and `maxNodes` (defaults: `DEFAULT_SCALING`). */
  scaling?: Partial<ScalingPolicy>;
  /** Routing policy of the proxy (default `least-outstanding`). */
  routing?: RoutingPolicy;
  /** SLURM options of the node jobs (ignored by the local provider). */
  cluster?: ClusterOptions;
  /** Extra engine arguments, one argv entry each. */
  engineArgs?: string[];
  /** Time limit of each node job in minutes; a successor is submitted ahead of it. */
  timeLimitMinutes?: number;
  /** `--api-key` the engines require; the proxy sends it upstream. */
  upstreamApiKey?: string;
  /** Free-form settings the caller's `buildNodeRequest` needs (ports, memory fraction ...). */
  extra?: Record<string, unknown>;
}

/**
 * What a deployment name (and a scheduler id) may be: it becomes part of the SLURM job name
 * `es-<schedulerId>-<deployment>`, so letters, digits, `.`, `_`, `-`, at most 63 characters,
 * not starting with a punctuation mark.
 */
export const DEPLOYMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * The tensor parallel sizes that split a node of `gpusPerNode` GPUs into whole engine
 * instances: the divisors of `gpusPerNode`, smallest first.
 * @example
 * tensorParallelSizes(8); // [1, 2, 4, 8]
 */
export function tensorParallelSizes(gpusPerNode: number): number[] {
  return Array.from({ length: gpusPerNode }, (_, i) => i + 1).filter((d) => gpusPerNode % d === 0);
}

/** Engine instances one node job runs (`gpusPerNode / tensorParallelSize`). */
export function workersPerNode(deployment: DeploymentConfig): number {
  return Math.max(1, Math.floor(deployment.gpusPerNode / deployment.tensorParallelSize));
}

/** Throws a {@link PoolError} (`invalid_config`) naming the first invalid field. */
export function validateDeployment(config: DeploymentConfig): void {
  const fail = (param: string, message: string): never => {
    throw new PoolError('invalid_config', `deployment ${config.name}: ${param} ${message}`, {
      param,
    });
  };
  if (!DEPLOYMENT_NAME.test(config.name)) fail('name', 'expected letters, digits, ".", "_" or "-"');
  if (config.model.trim() === '') fail('model', 'expected a model path or hub id');
  // The names reach the worker's and the engines' command lines: none may pass for a flag
  // (`--engine-bin=/bin/sh` as a served model name) or break a line of the batch script.
  const names: [string, string, string | undefined][] = [
    ['model', 'model', config.model],
    ['servedModelName', 'served-model-name', config.servedModelName],
    ...(config.aliases ?? []).map((alias, i): [string, string, string] => [
      `aliases.${i}`,
      'alias',
      alias,
    ]),
  ];
  for (const [param, flag, value] of names) {
    const problem =
      value === undefined ? undefined : commandLineValueProblem(flag, value, { name: true });
    if (problem) fail(param, `is refused: ${problem}`);
  }
  (config.engineArgs ?? []).forEach((arg, i) => {
    const problem = commandLineValueProblem('engine-extra-args', arg);
    if (problem) fail(`engineArgs.${i}`, `is refused: ${problem}`);
  });
  for (const key of ['tensorParallelSize', 'gpusPerNode'] as const) {
    if (!Number.isInteger(config[key]) || config[key] < 1) {
      fail(key, `expected an integer >= 1, got ${config[key]}`);
    }
  }
  if (!tensorParallelSizes(config.gpusPerNode).includes(config.tensorParallelSize)) {
    fail(
      'tensorParallelSize',
      `${config.tensorParallelSize} does not divide ${config.gpusPerNode}`,
    );
  }
  if (!Number.isInteger(config.maxNodes) || config.maxNodes < 0) {
    fail('maxNodes', `expected an integer >= 0, got ${config.maxNodes}`);
  }
  if (config.minNodes !== undefined) {
    if (!Number.isInteger(config.minNodes) || config.minNodes < 0) {
      fail('minNodes', `expected an integer >= 0, got ${config.minNodes}`);
    }
    if (config.minNodes > config.maxNodes) {
      fail(
        'minNodes',
        `${config.minNodes} is more than maxNodes ${config.maxNodes}: lower it or raise maxNodes`,
      );
    }
  }
  if (config.scaling !== undefined) validateScaling(config.scaling, fail);
  if (config.timeLimitMinutes !== undefined && !(config.timeLimitMinutes > 0)) {
    fail('timeLimitMinutes', `expected a number > 0, got ${config.timeLimitMinutes}`);
  }
}

/** What the proxy sees of a deployment: model names are served name, path, aliases, name. */
export function deploymentView(config: DeploymentConfig): DeploymentView {
  const names = [config.servedModelName, config.model, ...(config.aliases ?? []), config.name];
  const view: DeploymentView = {
    name: config.name,
    modelNames: [...new Set(names.filter((n): n is string => !!n))],
    model: config.model,
    engine: config.engine,
    routing: config.routing ?? 'least-outstanding',
  };
  if (config.upstreamApiKey !== undefined) view.upstreamApiKey = config.upstreamApiKey;
  const parsers = chatParsers(config);
  if (parsers !== undefined) view.chatParsers = parsers;
  if (config.minNodes === 0 && config.maxNodes > 0) view.scalesFromZero = true;
  return view;
}

/** The value of `--flag value` or `--flag=value` in engine arguments (the last one given). */
function flagValue(args: readonly string[], flag: string): string | undefined {
  let value: string | undefined;
  args.forEach((arg, i) => {
    if (arg === flag && i + 1 < args.length) value = args[i + 1];
    else if (arg.startsWith(`${flag}=`)) value = arg.slice(flag.length + 1);
  });
  return value;
}

/**
 * How the engine parses chat output (see `DeploymentView.chatParsers`): the parser names
 * in the engine arguments, and whether the model is a gpt-oss (vLLM renders its chat in
 * Harmony and parses it without any flag); undefined when nothing is parsed.
 * @example
 * chatParsers({ ...config, engineArgs: ['--reasoning-parser', 'qwen3'] }); // { reasoning: 'qwen3' }
 */
export function chatParsers(config: DeploymentConfig): ChatParsers | undefined {
  const args = config.engineArgs ?? [];
  const parsers: ChatParsers = {};
  const reasoning = flagValue(args, '--reasoning-parser');
  if (reasoning !== undefined) parsers.reasoning = reasoning;
  const tools = flagValue(args, '--tool-call-parser');
  if (tools !== undefined) parsers.tools = tools;
  if (/gpt-oss/i.test(config.model)) parsers.harmony = true;
  return Object.keys(parsers).length > 0 ? parsers : undefined;
}

/**
 * The `--job-name` of every job of one scheduler and deployment: `es-<schedulerId>-<deployment>`.
 * A restarted scheduler with the same id lists jobs by this name to adopt them.
 */
export function jobNameFor(schedulerId: string, deployment: string): string {
  return `es-${schedulerId}-${deployment}`;
}
