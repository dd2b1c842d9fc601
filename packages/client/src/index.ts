export { DEFAULT_SCHEDULER_URL, createSchedulerClient } from './client.js';
export type { SchedulerClient, SchedulerClientOptions } from './client.js';
export { ClientError } from './errors.js';
export {
  ADMIN_SIGNATURE_HEADERS,
  adminAnswerSignature,
  adminRequestSignature,
  signAdminRequest,
  signaturesMatch,
} from './signing.js';
export type { AdminRequestParts } from './signing.js';
export { findAdminKey, locateScheduler } from './locate.js';
export type { FoundAdminKey, LocateInput, SchedulerLocation } from './locate.js';
export { runCli } from './run-cli.js';
export type { CliIo } from './run-cli.js';
export type { ClientErrorCode, ClientErrorOptions } from './errors.js';
export {
  formatClusterFacts,
  formatClusterWorkers,
  formatDeployments,
  formatPublicStatus,
  formatDuration,
  formatJobs,
  formatStatus,
  formatWorkers,
  table,
} from './format.js';
export type {
  ApiErrorBody,
  ChatRequest,
  ChatResponse,
  ClusterFacts,
  ClusterStatusResponse,
  ClusterWorker,
  DashboardLoginResponse,
  DeploymentView,
  DrainResponse,
  EventView,
  EventsResponse,
  HealthResponse,
  JobView,
  LogsResponse,
  ModelsResponse,
  ProgressStep,
  ScaleResponse,
  SeedWorkerStatus,
  SeriesResponse,
  SeriesSample,
  StatusResponse,
  StopResponse,
  WorkerStateName,
  WorkerView,
} from './types.js';
