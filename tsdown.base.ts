import { defineConfig, type UserConfig } from 'tsdown';

/**
 * The build every package and app shares: ESM for Node 20 with type declarations and source
 * maps, `dist` emptied first. A package's `tsdown.config.ts` passes only what differs (its
 * entries, a file to copy; the apps turn `dts` off: nothing imports a binary).
 * @example
 * // packages/<name>/tsdown.config.ts
 * import { definePackageConfig } from '../../tsdown.base.ts';
 * export default definePackageConfig({ entry: ['src/index.ts', 'src/cli.ts'] });
 */
export function definePackageConfig(config: UserConfig & Pick<Required<UserConfig>, 'entry'>) {
  return defineConfig({
    format: 'esm',
    platform: 'node',
    target: 'node20',
    dts: true,
    sourcemap: true,
    clean: true,
    ...config,
  });
}
