import { defineConfig } from 'tsdown';

export default defineConfig({
  entry: ['src/index.ts'],
  format: 'esm',
  platform: 'node',
  target: 'node20',
  dts: true,
  sourcemap: true,
  clean: true,
  // The dashboard is one static page read at run time next to the module.
  copy: [{ from: 'src/dashboard.html', to: 'dist' }],
});
