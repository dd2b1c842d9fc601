import { defineConfig } from 'vitest/config';

// Stand-in for the root `reliability` project until it exists: the same resolve conditions
// and global setup (the SLURM dev cluster) as `integration`, one file at a time.
export default defineConfig({
  root: new URL('../..', import.meta.url).pathname,
  resolve: { conditions: ['@es/source'] },
  ssr: { resolve: { conditions: ['@es/source'], externalConditions: ['@es/source'] } },
  test: {
    name: 'reliability',
    include: ['packages/chaos/test/**/*.rel.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    globalSetup: ['packages/testkit/src/slurm-global-setup.ts'],
    testTimeout: 600_000,
    hookTimeout: 300_000,
    fileParallelism: false,
  },
});
