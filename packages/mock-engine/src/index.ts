export { createMockEngine } from './server.js';
export type { MockEngine } from './server.js';
export {
  continuationInput,
  encodePrompt,
  expectedGeneration,
  renderChatPrompt,
} from './generation.js';
export type {
  ChatMessage,
  ChatTemplateOptions,
  Generation,
  GenerationInput,
  GenerationLimits,
} from './generation.js';
export { MockEngineError } from './errors.js';
export type { MockEngineErrorCode } from './errors.js';
export { loadScript } from './options.js';
export type { MockEngineOptions, ScriptRule } from './options.js';
export type { MockEngineStats } from './metrics.js';
