import type { RegisterRequest } from '@es/protocol';
import type { DeploymentConfig } from '../src/index.js';

export function deployment(name = 'm', extra: Partial<DeploymentConfig> = {}): DeploymentConfig {
  return {
    name,
    model: `/models/${name}`,
    engine: 'mock',
    tensorParallelSize: 4,
    gpusPerNode: 8,
    maxNodes: 3,
    ...extra,
  };
}

export function registration(
  jobId: string,
  index = 0,
  extra: Partial<RegisterRequest> = {},
): RegisterRequest {
  return {
    deployment: 'm',
    jobId,
    restartCount: 0,
    index,
    host: '127.0.0.1',
    port: 9000 + index,
    gpus: [index * 4, index * 4 + 1, index * 4 + 2, index * 4 + 3],
    engine: 'mock',
    model: '/models/m',
    node: 'node-1',
    state: 'loading',
    ...extra,
  };
}

/** A settable clock. */
export function manualClock(start = 1_000_000) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
    set: (ms: number) => {
      t = ms;
    },
  };
}
