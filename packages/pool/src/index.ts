export type {
  AttemptOutcome,
  ChatParsers,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingChange,
  RoutingPolicy,
} from './view.js';
export { ROUTING_POLICIES } from './view.js';
export { ProviderError, classifyProviderError, isProviderError } from './provider.js';
export type {
  ClusterOptions,
  FailureKind,
  JobState,
  ListFilter,
  NodeProvider,
  NodeRequest,
  ObservedJob,
  ProviderErrorOptions,
  ProviderFailure,
} from './provider.js';
export { SlicePlanError, parseVisibleDevices, planNodeSlices, planSlices } from './slices.js';
export type { GpuSource, PlannedSlice, SlicePlan, SlicePlanOptions } from './slices.js';
export { PoolError } from './errors.js';
export type { PoolErrorCode, PoolErrorOptions } from './errors.js';
export {
  DEPLOYMENT_NAME,
  deploymentView,
  jobNameFor,
  tensorParallelSizes,
  validateDeployment,
} from './deployment.js';
export type { DeploymentConfig } from './deployment.js';
export { DEFAULT_SCALING, decideScale, scalingPolicy, validateScaling } from './scaling.js';
export type {
  LoadSample,
  ScaleDecision,
  ScaleInput,
  ScaleState,
  ScalingPolicy,
} from './scaling.js';
export { createRegistry } from './registry.js';
export type {
  JobInfo,
  PoolEvent,
  PoolEventListener,
  PoolEventType,
  Registry,
  RegistryOptions,
  RegistrySnapshot,
  WorkerInfo,
  WorkerState,
} from './registry.js';
export type {
  ControlPlaneRouting,
  DataPlaneAccounting,
  DeploymentCatalog,
  DrainResult,
  JobLedger,
  PoolEventFeed,
  PoolEventLog,
  PoolOperator,
  PoolReadModel,
  ScaleResult,
  WorkerDirectory,
  WorkerLedger,
} from './roles.js';
export { createWorkerApi } from './worker-api.js';
export type { WorkerApiOptions, WorkerLedgerLike } from './worker-api.js';
export { startWorkerApiThread } from './worker-api-thread.js';
export type {
  WorkerApiPool,
  WorkerApiThread,
  WorkerApiThreadOptions,
} from './worker-api-thread.js';
export type { CancelItem, ReconcileAction, ReconcileOptions } from './reconcile/index.js';
export { createReconciler } from './reconciler.js';
export type {
  DeploymentStatus,
  JobStatus,
  NodeRequestInit,
  Reconciler,
  ReconcilerOptions,
  ReconcilerRegistry,
  ReconcilerStatus,
  ScalingStatus,
  TickResult,
} from './reconciler.js';
export { createRoutingWatchServer } from './routing-watch.js';
export type {
  RoutingWatchServer,
  RoutingWatchServerOptions,
  RoutingWatchSource,
} from './routing-watch.js';
export { createDataPlaneLedger } from './data-plane-ledger.js';
export type {
  DataPlaneLedger,
  DataPlaneLedgerOptions,
  DataPlaneProcess,
  DataPlaneProcessState,
  DataPlaneRecords,
  DataPlaneReportResult,
} from './data-plane-ledger.js';
