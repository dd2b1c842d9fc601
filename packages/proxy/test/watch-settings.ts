import type { DataPlaneSettings } from '@es/protocol';

/** The data-plane settings a test's watch stream sends in its snapshot. */
export const SETTINGS: DataPlaneSettings = {
  clientKeyHashes: [],
  corsOrigins: [],
  exposeSelectedEndpoint: false,
  maxContinuations: 3,
  stallTimeoutMs: 30_000,
  bodyBudgetBytes: 1 << 30,
  clientIdleTimeoutMs: 120_000,
  maxConnections: 10_000,
};
