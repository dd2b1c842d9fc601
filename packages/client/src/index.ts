export { DEFAULT_SCHEDULER_URL, createSchedulerClient } from './client.js';
export type { SchedulerClient, SchedulerClientOptions } from './client.js';
export { ClientError } from './errors.js';
export {
  ADMIN_SIGNATURE_HEADERS,
  ADMIN_SIGNATURE_WINDOW_MS,
  adminAnswerSignature,
  adminRequestSignature,
  createAdminRequestVerifier,
  isSignedAdminAnswer,
  signAdminRequest,
} from './signing.js';
export type {
  AdminRequestCheck,
  AdminRequestParts,
  AdminRequestVerifier,
  SignedAdminRequest,
} from './signing.js';
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
  formatDataPlane,
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
  DataPlaneProcessView,
  DataPlaneView,
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
