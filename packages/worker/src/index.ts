export { createWorker } from './worker.js';
export { runWorker } from './run-worker.js';
export type {
  InstanceStatus,
  Worker,
  WorkerExit,
  WorkerLogger,
  WorkerOptions,
} from './worker-options.js';
export { systemClock } from './clock.js';
export type { Clock } from './clock.js';
export {
  engineAdapter,
  mockAdapter,
  mockEngineCliPath,
  parsePrometheus,
  sglangAdapter,
  vllmAdapter,
} from './engines.js';
export type { EngineAdapter, EngineCommand, EngineSpec } from './engines.js';
export { splitArgs } from './split-args.js';
export { freePort, isPortFree, resolveAdvertiseHost } from './host.js';
/** Kept for callers of `@es/worker`: the one definition is `@es/protocol`'s. */
export { isHttpUrl } from '@es/protocol';
export type { AdvertiseHostOptions } from './host.js';
export { WorkerError } from './errors.js';
export type { WorkerErrorCode } from './errors.js';
