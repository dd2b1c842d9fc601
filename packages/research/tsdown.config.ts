import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({
  entry: ['src/index.ts', 'src/cli-generate.ts', 'src/cli-load-test.ts'],
});
