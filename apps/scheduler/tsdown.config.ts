import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({ entry: ['src/cli.ts'], dts: false });
