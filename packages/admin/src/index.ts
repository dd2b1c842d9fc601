export { createAdminApi } from './api.js';
export type { AdminApi, AdminApiOptions } from './api.js';
export { createAdminAuth, SIGNATURE_WINDOW_MS } from './auth.js';
export type { AdminAuth, AdminAuthResult } from './auth.js';
// How a request proves the admin key to `createAdminAuth` (defined in `@es/client`, which signs).
export { signAdminRequest } from '@es/client';
export { AdminError } from './errors.js';
export type { AdminErrorCode } from './errors.js';
export { instrumentProvider } from './instrument.js';
export { createMetrics } from './metrics.js';
export type { Metrics, MetricsOptions, ProviderCallOutcome, ProviderOperation } from './metrics.js';
export { mountAdmin } from './mount.js';
export type { AdminAttachment, MountAdminOptions, MountedAdmin } from './mount.js';
export { createSessionStore, LOGIN_TOKEN_TTL_MS, SESSION_TTL_MS } from './sessions.js';
export type { SessionStore } from './sessions.js';
export { buildStatus, createProgressTracker, progressLine } from './status-view.js';
export type { ProgressTracker, StatusInput } from './status-view.js';
