export { WORKER_API_PREFIX, WORKER_ENV, deriveKeys, formatWorkerId } from './protocol.js';
export type {
  DeregisterRequest,
  DerivedKeys,
  DrainRequest,
  EngineKind,
  EngineLoad,
  HeartbeatRequest,
  HeartbeatResponse,
  RegisterRequest,
  RegisterResponse,
  ReportedState,
} from './protocol.js';
export type {
  AttemptOutcome,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingPolicy,
} from './view.js';
export { classifyProviderError } from './provider.js';
export type {
  ClusterOptions,
  FailureKind,
  JobState,
  ListFilter,
  NodeProvider,
  NodeRequest,
  ObservedJob,
  ProviderFailure,
} from './provider.js';
export { SlicePlanError, parseVisibleDevices, planSlices } from './slices.js';
export type { PlannedSlice, SlicePlanOptions } from './slices.js';
