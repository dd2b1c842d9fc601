export { createLocalProvider } from './local-provider.js';
export type {
  LocalCloseOptions,
  LocalNodeInfo,
  LocalProvider,
  LocalProviderOptions,
} from './local-provider.js';
export { LocalProviderError } from './errors.js';
export type { LocalProviderErrorCode, LocalProviderErrorOptions } from './errors.js';
