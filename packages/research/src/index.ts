export { ResearchError } from './errors.js';
export type { ResearchErrorCode, ResearchErrorOptions } from './errors.js';
