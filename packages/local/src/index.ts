export { createLocalProvider } from './local-provider.js';
export type {
  LocalCloseOptions,
  LocalNodeInfo,
  LocalProvider,
  LocalProviderOptions,
} from './local-provider.js';
export { LocalProviderError } from './errors.js';
export { JOB_KEY_ENV } from './job.js';
export type { LocalProviderErrorCode, LocalProviderErrorOptions } from './errors.js';
