import { describeNodeProvider } from '@es/testkit/node-provider';
import { createLocalProvider } from '../src/index.js';

// The embedded default must keep the contract the SLURM provider keeps on the dev cluster
// (packages/slurm/test/conformance.int.test.ts).
describeNodeProvider(
  'local',
  () => createLocalProvider({ nodes: 2, gpusPerNode: 8, killGraceMs: 1_000 }),
  {
    gpusPerNode: 8,
    capacity: 2,
    killGraceMs: 1_000,
    timeoutMs: 20_000,
    preempt: {
      run: async (provider, job) => {
        if (!provider.preempt(job.id)) throw new Error(`job ${job.id} was not running`);
      },
      requeues: false,
    },
    cleanup: (provider) => provider.close({ kill: true }),
  },
);
