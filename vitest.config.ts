import { defineConfig } from 'vitest/config';

// Workspace packages resolve to their TypeScript sources in tests (the "@es/source"
// export condition), so `vitest` never needs a build of the package under test.
// Child processes (workers, engines, the scheduler) run from `dist`, which
// `pnpm test` builds first.
const resolve = { conditions: ['@es/source'] };
// Tests run in vitest's node (SSR) environment, which reads its own resolve conditions.
const ssr = { resolve: { conditions: ['@es/source'], externalConditions: ['@es/source'] } };
const ignored = ['**/node_modules/**', '**/dist/**'];

export default defineConfig({
  test: {
    projects: [
      {
        resolve,
        ssr,
        test: {
          name: 'unit',
          include: [
            'packages/*/{src,test}/**/*.test.ts',
            'apps/*/{src,test}/**/*.test.ts',
            'test/**/*.test.ts',
          ],
          exclude: [...ignored, '**/*.int.test.ts', '**/*.rel.test.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          // Two files at a time even on 2 cores (vitest's default is one fewer than the cores):
          // most of their time is spent waiting for child processes and sockets, and every
          // timing bound must hold with one core kept busy by something else anyway.
          maxWorkers: 2,
        },
      },
      {
        resolve,
        ssr,
        test: {
          name: 'integration',
          include: [
            'packages/*/test/**/*.int.test.ts',
            'apps/*/test/**/*.int.test.ts',
            'test/**/*.int.test.ts',
          ],
          exclude: ignored,
          globalSetup: ['packages/testkit/src/slurm-global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          // One SLURM cluster with four nodes is shared: run integration files one at a time.
          fileParallelism: false,
        },
      },
      {
        resolve,
        ssr,
        test: {
          // Fault injection under load with a recorded history and a checker (@es/chaos).
          name: 'reliability',
          include: ['packages/*/test/**/*.rel.test.ts'],
          exclude: ignored,
          globalSetup: ['packages/testkit/src/slurm-global-setup.ts'],
          testTimeout: 600_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
