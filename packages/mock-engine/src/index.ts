export { createMockEngine } from './server.js';
export type { MockEngine } from './server.js';
export type { FirstTokenRecord, RequestLogRecord } from './request-log.js';
export { VOCABULARY_SIZE, decode, encode } from './tokenizer.js';
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
  TokenLogprob,
} from './generation.js';
export { MockEngineError } from './errors.js';
export type { MockEngineErrorCode } from './errors.js';
export { loadScript } from './options.js';
export type { MockEngineOptions, ScriptRule } from './options.js';
export type { MockEngineStats } from './metrics.js';
