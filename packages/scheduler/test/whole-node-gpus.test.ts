/**
 * What sbatch receives for a deployment's GPUs: exactly `gpus_per_node` by default, whole
 * nodes with at least that many under `whole_node_gpus`; from the settings to the batch
 * script, as the reconciler submits it.
 */
import { describe, expect, it } from 'vitest';
import { isEsError } from '@es/protocol';
import { nodeRequestToJobSpec, renderBatchScript } from '@es/slurm';
import { toDeploymentConfig } from '../src/node-request.js';
import { resolveConfig } from '../src/resolve-config.js';

/** The batch script of deployment 0 resolved from `flags`. */
function scriptOf(flags: Record<string, unknown>): string {
  const [d] = resolveConfig({ model: 'm', ...flags }, {}).deployments;
  if (!d) throw new Error('no deployment');
  const config = toDeploymentConfig(d);
  return renderBatchScript(
    nodeRequestToJobSpec({
      deployment: config.name,
      name: 'es-m',
      tag: 'es:t:m:1',
      gpusPerNode: config.gpusPerNode,
      command: ['/usr/bin/node', '/opt/es/worker.mjs'],
      env: {},
      logDir: '/shared/logs',
      ...(config.cluster ? { cluster: config.cluster } : {}),
    }),
  );
}

/** The lines of a script that ask SLURM for GPUs and start the worker's step. */
function gpuLines(script: string): string[] {
  return script
    .split('\n')
    .filter((line) => /--gpus-per-node|--exclusive|--gres|^exec srun/.test(line));
}

describe('GPUs per node in the batch script', () => {
  it.each<[string, Record<string, unknown>, string[]]>([
    [
      'by default: exactly gpus_per_node',
      { gpusPerNode: 8, tensorParallelSize: 4 },
      ['#SBATCH --gpus-per-node=8', 'exec srun --ntasks=1 -- /usr/bin/node /opt/es/worker.mjs'],
    ],
    [
      'whole_node_gpus: whole nodes of at least gpus_per_node, every GPU to the step',
      { gpusPerNode: 4, tensorParallelSize: 4, wholeNodeGpus: true },
      [
        '#SBATCH --gpus-per-node=4',
        '#SBATCH --exclusive',
        'exec srun --ntasks=1 --gres=gpu:"$SLURM_GPUS_ON_NODE" -- /usr/bin/node /opt/es/worker.mjs',
      ],
    ],
    [
      'whole_node_gpus with exclusive: one --exclusive',
      { gpusPerNode: 4, tensorParallelSize: 2, wholeNodeGpus: true, exclusive: true },
      [
        '#SBATCH --gpus-per-node=4',
        '#SBATCH --exclusive',
        'exec srun --ntasks=1 --gres=gpu:"$SLURM_GPUS_ON_NODE" -- /usr/bin/node /opt/es/worker.mjs',
      ],
    ],
  ])('%s', (_label, flags, lines) => {
    expect(gpuLines(scriptOf(flags))).toEqual(lines);
  });

  it('refuses whole_node_gpus with exclusive false, naming the field and the fix', () => {
    let error: unknown;
    try {
      resolveConfig({ model: 'm', wholeNodeGpus: true, exclusive: false }, {});
    } catch (caught) {
      error = caught;
    }
    expect(isEsError(error, 'invalid_config')).toBe(true);
    expect(error).toMatchObject({
      param: 'wholeNodeGpus',
      message:
        'whole_node_gpus asks SLURM for whole nodes (--exclusive) but exclusive is false: ' +
        'drop "exclusive: false" (or --no-exclusive), or drop whole_node_gpus to ask for exactly gpus_per_node GPUs',
    });
  });
});
