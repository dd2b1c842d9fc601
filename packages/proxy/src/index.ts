export { createProxyApp } from './app.js';
export type { ProxyApp, ProxyEnv } from './app.js';
export { parseCorsOrigin } from './cors.js';
export { ProxyError } from './errors.js';
export type { PlantedFaults, RoutingJournal, RoutingJournalEntry } from './journal.js';
export { parsePlantedFaults, reliabilityHooks } from './reliability-hooks.js';
export type { ReliabilityHooks } from './reliability-hooks.js';
export type {
  OpenAIErrorBody,
  OpenAIErrorType,
  ProxyErrorCode,
  ProxyErrorOptions,
} from './errors.js';
export type {
  AffinityOptions,
  ContinuationOptions,
  ContinuationRecord,
  ProxyAppOptions,
  ProxyLogger,
  ProxyRequestRecord,
  QueueOptions,
  RequestOutcome,
  RetryOptions,
  UpstreamOptions,
} from './options.js';
export type { InexactReason, RefusalReason } from './continuation/plan.js';
export { startProxyServer } from './server.js';
export type { NodeServerFetch, ProxyServer, ProxyServerOptions } from './server.js';
export { createRoutingWatchClient } from './routing-watch-client.js';
export type {
  RoutingWatchClient,
  RoutingWatchClientOptions,
  RoutingWatchStatus,
} from './routing-watch-client.js';
export { startDataPlane } from './data-plane/data-plane.js';
export type { DataPlane, DataPlaneLogger, DataPlaneOptions } from './data-plane/data-plane.js';
export { DataPlaneError } from './data-plane/errors.js';
export type { DataPlaneErrorCode, DataPlaneErrorOptions } from './data-plane/errors.js';
export type { ReportResult } from './data-plane/report-sender.js';
