export { createSlurmClient } from './client.js';
export type { JobFilter, SlurmClient, SlurmClientOptions } from './client.js';
export { classifySlurmMessage, SlurmError } from './errors.js';
export type { SlurmErrorCode, SlurmErrorOptions, SlurmFailureClass } from './errors.js';
export { createSlurmProvider, nodeRequestToJobSpec } from './provider.js';
export type { SlurmProviderOptions } from './provider.js';
export { execaRunner } from './runner.js';
export type { CommandResult, CommandRunner, CommandRunOptions } from './runner.js';
export { renderBatchScript, SHARED_PATH_HINT, shellQuote } from './script.js';
export type { JobSpec, RequiredPath } from './script.js';
export {
  parseDuration,
  parseJobState,
  parseSbatchOutput,
  parseSlurmTime,
  parseSqueue,
  SQUEUE_FORMAT,
  SQUEUE_SEPARATOR,
} from './squeue.js';
export type { SlurmJob } from './squeue.js';
