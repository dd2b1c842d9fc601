import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({
  entry: ['src/index.ts', 'src/cli.ts', 'src/simulated-workers.ts'],
});
