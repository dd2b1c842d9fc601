/**
 * How a deployment becomes a node job: the worker command line and environment the batch
 * script (or the local provider) runs. Pure, so the exact argv is table-tested.
 */
import type { ClusterOptions, DeploymentConfig, NodeRequestInit } from '@es/pool';
import { join } from 'node:path';
import { WORKER_ENV } from '@es/protocol';
import { shellQuote } from '@es/slurm';
import type { DeploymentSettings } from './config.js';

export interface NodeRequestContext {
  /** URL the workers use to reach this scheduler. */
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
  if (d.slurmExtra.length > 0) options.extraSbatch = d.slurmExtra;
  const setup = setupLines(d);
  if (setup.length > 0) options.setup = setup;
  return options;
}

/** The worker's argv for one deployment (flags of `es-worker`). */
export function workerArgs(d: DeploymentSettings, ctx: NodeRequestContext): string[] {
  const args = [
    ...ctx.workerCommand,
    '--deployment',
    d.name,
    '--engine',
    d.engine,
    '--model',
    d.model,
    '--tensor-parallel-size',
    String(d.tensorParallelSize),
    '--gpus-per-node',
    String(d.gpusPerNode),
    '--gpu-memory-utilization',
    String(d.gpuMemoryUtilization),
    '--base-port',
    String(ctx.anyPort ? 0 : d.workerBasePort),
    '--log-dir',
    ctx.logDir,
  ];
  if (d.servedModelName) args.push('--served-model-name', d.servedModelName);
  if (d.maxModelLen !== undefined) args.push('--max-model-len', String(d.maxModelLen));
  // The `=` form: the value usually starts with "--".
  if (d.engineExtraArgs.trim() !== '') args.push(`--engine-extra-args=${d.engineExtraArgs}`);
  return args;
}

/** What the reconciler submits for deployment `d`: the worker command, env and log dir. */
export function workerRequest(d: DeploymentSettings, ctx: NodeRequestContext): NodeRequestInit {
  return {
    command: workerArgs(d, ctx),
    env: {
      [WORKER_ENV.schedulerUrl]: ctx.schedulerUrl,
      [WORKER_ENV.schedulerUrlFile]: join(ctx.logDir, 'scheduler-url'),
      [WORKER_ENV.secretFile]: ctx.secretFile,
      [WORKER_ENV.deployment]: d.name,
    },
    logDir: ctx.logDir,
  };
}

/** The pool's view of a deployment. */
export function toDeploymentConfig(
  d: DeploymentSettings,
  upstreamApiKey?: string,
): DeploymentConfig {
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
  if (upstreamApiKey) config.upstreamApiKey = upstreamApiKey;
  return config;
}
