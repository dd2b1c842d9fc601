export {
  EsError,
  ProtocolError,
  isEsError,
  isProtocolError,
  openAIErrorBody,
  openAIErrorType,
} from './errors.js';
export type { EsErrorOptions, OpenAIErrorBody, OpenAIErrorType } from './errors.js';
export { ENGINE_KINDS, ENGINE_NAMES, isEngineKind } from './engines.js';
export type { EngineKind } from './engines.js';
export {
  DeregisterRequestSchema,
  DrainRequestSchema,
  EngineKindSchema,
  EngineLoadSchema,
  ErrorBodySchema,
  HandoverRequestSchema,
  HandoverResponseSchema,
  HeartbeatRequestSchema,
  HostSchema,
  OkResponseSchema,
  REPORTED_STATES,
  RegisterRequestSchema,
  RegisterResponseSchema,
  ReportedStateSchema,
  WORKER_API_PREFIX,
  WORKER_DRAINING,
  WORKER_ROUTES,
  isRegistrableHost,
  workerRoutePath,
} from './schemas.js';
export type {
  DeregisterRequest,
  DrainRequest,
  EngineLoad,
  ErrorBody,
  HandoverRequest,
  HandoverResponse,
  HeartbeatRequest,
  HeartbeatResponse,
  OkResponse,
  RegisterRequest,
  RegisterResponse,
  ReportedState,
  WorkerRouteName,
} from './schemas.js';
export { WORKER_ENV, derivedSecrets, deriveEngineKey, deriveKeys, formatWorkerId } from './keys.js';
export type { DerivedKeys } from './keys.js';
export {
  MAX_REMEMBERED_NONCES,
  WORKER_SIGNATURE_HEADERS,
  audienceOf,
  WORKER_SIGNATURE_WINDOW_MS,
  createWorkerRequestVerifier,
  isSignedWorkerAnswer,
  signWorkerAnswer,
  signWorkerRequest,
} from './signing.js';
export type {
  SignedWorkerRequest,
  WorkerAnswerParts,
  WorkerRequestCheck,
  WorkerRequestParts,
  WorkerRequestRefusalCode,
  WorkerRequestVerifier,
  WorkerRequestVerifierOptions,
} from './signing.js';
export { createWorkerClient } from './client.js';
export type {
  FetchLike,
  WorkerCallFailure,
  WorkerCallOptions,
  WorkerCallResult,
  WorkerClient,
  WorkerClientOptions,
} from './client.js';
export {
  WORKER_FLAGS,
  WORKER_NAME_OPTIONS,
  WorkerArgvError,
  buildWorkerArgv,
  commandLineValueProblem,
  buildWorkerEnv,
  defaultHandoverMargin,
  missingWorkerFlag,
  workerGraceProblem,
  readWorkerArgv,
  workerYargsOptions,
} from './worker-argv.js';
export type {
  WorkerArgv,
  WorkerArgvInput,
  WorkerFlagName,
  WorkerFlagSpec,
  WorkerGraces,
  WorkerYargsOption,
} from './worker-argv.js';
export {
  SCHEDULER_URL_FILE_NAME,
  isHttpUrl,
  readSchedulerUrl,
  readSchedulerUrlSync,
  removeSchedulerUrl,
  schedulerUrlFilePath,
  workerUrlFilePath,
  writeSchedulerUrl,
} from './url-file.js';
export type { SchedulerUrlRead } from './url-file.js';
export {
  MIN_SCHEDULER_SECRET_LENGTH,
  PrivateDirError,
  SecretFileError,
  ensurePrivateDir,
  isPrivateDirError,
  isSecretFileError,
  loadOrCreateSecret,
  readKeyFile,
  readSecret,
} from './secret.js';
export type {
  EnsurePrivateDirOptions,
  PrivateDirErrorCode,
  ReadSecretOptions,
  SecretFileErrorCode,
} from './secret.js';
export { createBearerCheck, createKeyCheck } from './bearer.js';
export { REDACTED, redactSecrets, redactingStream } from './redact.js';
export type { LineSink } from './redact.js';
export { backoffDelay } from './backoff.js';
export {
  ROUTING_WATCH_HEARTBEAT_MS,
  ROUTING_WATCH_ROUTE,
  RoutingWatchDeploymentSchema,
  RoutingWatchEventSchema,
  RoutingWatchWorkerSchema,
  createRoutingWatchSigner,
  createRoutingWatchVerifier,
  jobIdOfWorker,
} from './routing-watch.js';
export type {
  RoutingWatchDeployment,
  RoutingWatchEvent,
  RoutingWatchLineCheck,
  RoutingWatchWorker,
} from './routing-watch.js';
export type { BackoffJitter, BackoffOptions } from './backoff.js';
export {
  DATA_PLANE_MAX_RECORDS,
  DATA_PLANE_REPORT_MS,
  DATA_PLANE_ROUTES,
  DATA_PLANE_SILENT_MS,
  DataPlaneContinuationRecordSchema,
  DataPlaneReportSchema,
  DataPlaneRequestRecordSchema,
  DataPlaneSettingsSchema,
  DataPlaneStateSchema,
  clientKeyHash,
  readDataPlaneState,
  writeDataPlaneState,
} from './data-plane.js';
export type { DataPlaneReport, DataPlaneSettings, DataPlaneState } from './data-plane.js';
