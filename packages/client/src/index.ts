export { DEFAULT_SCHEDULER_URL, createSchedulerClient } from './client.js';
export type { SchedulerClient, SchedulerClientOptions } from './client.js';
export { ClientError } from './errors.js';
export { runCli } from './run-cli.js';
export type { CliIo } from './run-cli.js';
export type { ClientErrorCode, ClientErrorOptions } from './errors.js';
export {
  formatDeployments,
  formatDuration,
  formatJobs,
  formatStatus,
  formatWorkers,
  table,
} from './format.js';
export type {
  ApiErrorBody,
  DeploymentView,
  DrainResponse,
  EventView,
  EventsResponse,
  JobView,
  LogsResponse,
  ProgressStep,
  ScaleResponse,
  SeriesResponse,
  SeriesSample,
  StatusResponse,
  StopResponse,
  WorkerStateName,
  WorkerView,
} from './types.js';
