import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({
  entry: ['src/index.ts'],
  // The dashboard is one static page read at run time next to the module.
  copy: [{ from: 'src/dashboard.html', to: 'dist' }],
});
