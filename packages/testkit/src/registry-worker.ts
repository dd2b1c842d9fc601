import type { DeploymentConfig, WorkerLedger } from '@es/pool';

/** A deployment of one-GPU workers of the mock engine (model `/models/<name>`), up to 4 nodes. */
export function oneGpuDeployment(name = 'qwen'): DeploymentConfig {
  return {
    name,
    model: `/models/${name}`,
    engine: 'mock',
    tensorParallelSize: 1,
    gpusPerNode: 1,
    maxNodes: 4,
  };
}

/**
 * Registers a worker of `deployment` (default `qwen`, model `/models/<deployment>`) at
 * 127.0.0.1:`port` and reports it ready, as a worker's first register and heartbeat do:
 * its id.
 */
export function registerReadyWorker(
  registry: Pick<WorkerLedger, 'register' | 'heartbeat'>,
  jobId: string,
  port: number,
  deployment = 'qwen',
): string {
  const { workerId } = registry.register({
    deployment,
    jobId,
    restartCount: 0,
    index: 0,
    host: '127.0.0.1',
    port,
    gpus: [0],
    engine: 'mock',
    model: `/models/${deployment}`,
    node: 'local',
    state: 'loading',
  });
  registry.heartbeat(workerId, {
    state: 'ready',
    restartCount: 0,
    load: { running: 0, waiting: 0 },
  });
  return workerId;
}
