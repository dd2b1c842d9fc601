export { createMockEngine } from './server.js';
export type { MockEngine } from './server.js';
export { MockEngineError } from './errors.js';
export type { MockEngineErrorCode } from './errors.js';
export { loadScript } from './options.js';
export type { MockEngineOptions, ScriptRule } from './options.js';
export type { MockEngineStats } from './metrics.js';
