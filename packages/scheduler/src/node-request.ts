/**
 * How a deployment becomes a node job: the worker command line and environment the batch
 * script (or the local provider) runs. Pure, so the exact argv is table-tested.
 */
import type { ClusterOptions, DeploymentConfig, NodeRequestInit } from '@es/pool';
import { buildWorkerArgv, buildWorkerEnv, workerUrlFilePath } from '@es/protocol';
import { shellQuote } from '@es/slurm';
import type { DeploymentSettings } from './settings.js';

export interface NodeRequestContext {
  /** URL the workers use to reach this scheduler: its worker listener. */
  schedulerUrl: string;
  /** Absolute path of the shared secret file. */
  secretFile: string;
  /** Absolute log directory (job scripts, job output, engine logs). */
  logDir: string;
  /** argv prefix that starts the worker, e.g. `[node, /abs/apps/worker/dist/cli.mjs]`. */
  workerCommand: string[];
  /** Local backend: several "nodes" share one machine, so engines take free ports. */
  anyPort: boolean;
}

/** What `conda activate` is given: an environment's name or its absolute path. */
const CONDA_ENV = /^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]*|\/[A-Za-z0-9_.+/-]+)$/;

/**
 * Why `condaEnv` may not reach the batch script's `conda activate` line, or undefined when
 * it may: a name (not starting with `-`) or an absolute path, no shell syntax.
 */
export function condaEnvProblem(condaEnv: string): string | undefined {
  if (CONDA_ENV.test(condaEnv)) return undefined;
  return `--conda-env ${JSON.stringify(condaEnv)} is not a conda environment: pass its name (letters, digits, "_", ".", "+", "-", not starting with "-") or its absolute path`;
}

/** Shell lines that activate the deployment's environment on the node. */
export function setupLines(d: DeploymentSettings): string[] {
  const lines: string[] = [];
  if (d.venvPath) lines.push(`source ${shellQuote(`${d.venvPath}/bin/activate`)}`);
  if (d.condaEnv) {
    lines.push(
      'for conda_sh in "$HOME/miniconda3/etc/profile.d/conda.sh" "$HOME/anaconda3/etc/profile.d/conda.sh" /opt/conda/etc/profile.d/conda.sh; do',
      '  if [ -f "$conda_sh" ]; then source "$conda_sh"; break; fi',
      'done',
      `conda activate ${shellQuote(d.condaEnv)}`,
    );
  }
  return [...lines, ...d.setup];
}

/** SLURM options of a deployment's node jobs. */
export function clusterOptions(d: DeploymentSettings): ClusterOptions {
  const options: ClusterOptions = { exclusive: d.exclusive, requeue: true };
  if (d.partition) options.partition = d.partition;
  if (d.qos) options.qos = d.qos;
  if (d.account) options.account = d.account;
  if (d.constraint) options.constraint = d.constraint;
  if (d.wholeNodeGpus) options.wholeNodeGpus = true;
  if (d.slurmExtra.length > 0) options.extraSbatch = d.slurmExtra;
  const setup = setupLines(d);
  if (setup.length > 0) options.setup = setup;
  return options;
}

/** The worker's argv for one deployment (`WORKER_FLAGS` of `@es/protocol`). */
export function workerArgs(d: DeploymentSettings, ctx: NodeRequestContext): string[] {
  return [
    ...ctx.workerCommand,
    ...buildWorkerArgv({
      deployment: d.name,
      engine: d.engine,
      model: d.model,
      tensorParallelSize: d.tensorParallelSize,
      gpusPerNode: d.gpusPerNode,
      gpuMemoryUtilization: d.gpuMemoryUtilization,
      basePort: ctx.anyPort ? 0 : d.workerBasePort,
      logDir: ctx.logDir,
      servedModelName: d.servedModelName || undefined,
      maxModelLen: d.maxModelLen,
      drainGraceSeconds: d.drainGrace,
      handoverMarginSeconds: d.handoverMargin,
      // Passed as --engine-extra-args=<value>: the value usually starts with "--".
      engineExtraArgs: d.engineExtraArgs.trim() === '' ? undefined : d.engineExtraArgs,
    }),
  ];
}

/** What the reconciler submits for deployment `d`: the worker command, env and log dir. */
export function workerRequest(d: DeploymentSettings, ctx: NodeRequestContext): NodeRequestInit {
  return {
    command: workerArgs(d, ctx),
    env: buildWorkerEnv({
      schedulerUrl: ctx.schedulerUrl,
      schedulerUrlFile: workerUrlFilePath(ctx.logDir),
      secretFile: ctx.secretFile,
      deployment: d.name,
    }),
    logDir: ctx.logDir,
  };
}

/** The pool's view of a deployment. */
export function toDeploymentConfig(d: DeploymentSettings): DeploymentConfig {
  const config: DeploymentConfig = {
    name: d.name,
    model: d.model,
    engine: d.engine,
    tensorParallelSize: d.tensorParallelSize,
    gpusPerNode: d.gpusPerNode,
    maxNodes: d.maxNodes,
    routing: d.routing,
    cluster: clusterOptions(d),
  };
  if (d.servedModelName) config.servedModelName = d.servedModelName;
  if (d.timeLimitMinutes !== undefined) config.timeLimitMinutes = d.timeLimitMinutes;
  if (d.minNodes !== undefined) config.minNodes = d.minNodes;
  if (d.scaling !== undefined) config.scaling = { ...d.scaling };
  return config;
}
