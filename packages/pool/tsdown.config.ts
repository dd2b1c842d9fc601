import { defineConfig } from 'tsdown';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    // The worker API's thread: loaded by path (new Worker), so a file of its own.
    'worker-api-thread': 'src/worker-api-thread/entry.ts',
  },
  format: 'esm',
  platform: 'node',
  target: 'node20',
  dts: true,
  sourcemap: true,
  clean: true,
});
