import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({
  entry: {
    index: 'src/index.ts',
    // The worker API's thread: loaded by path (new Worker), so a file of its own.
    'worker-api-thread': 'src/worker-api-thread/entry.ts',
  },
});
