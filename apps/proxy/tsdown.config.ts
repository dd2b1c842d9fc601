import { definePackageConfig } from '../../tsdown.base.js';

export default definePackageConfig({ entry: ['src/main.ts'], dts: false });
