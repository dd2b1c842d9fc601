import { cancelByNamePrefix, preempt, slurmEnv, uniqueJobPrefix } from '@es/testkit';
import { describeNodeProvider } from '@es/testkit/node-provider';
import { createSlurmProvider } from '../src/index.js';

// The same contract the local provider keeps in unit tests (packages/local/test/
// conformance.test.ts), here on the dev cluster: 4 nodes × 8 GPUs, partition `low`
// preemptible (requeue) by `high`.
describeNodeProvider('slurm (dev cluster)', () => createSlurmProvider({ env: slurmEnv() }), {
  gpusPerNode: 8,
  capacity: 4,
  // KillWait=5 in the dev cluster's slurm.conf.
  killGraceMs: 5_000,
  cluster: { partition: 'low' },
  namePrefix: uniqueJobPrefix('conf'),
  // Generous: a job starts on the controller's next scheduling pass (2 s) on a busy machine.
  timeoutMs: 90_000,
  preempt: {
    run: async (_provider, job, namePrefix) => {
      await preempt(job.nodes, 30, `${namePrefix}preempt`);
    },
    requeues: true,
  },
  cleanup: async (_provider, namePrefix) => {
    await cancelByNamePrefix(namePrefix);
  },
});
