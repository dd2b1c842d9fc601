import type { Registry } from '@es/pool';

/** Registers a worker of deployment `qwen` at 127.0.0.1:`port` and reports it ready: its id. */
export function registerReadyWorker(registry: Registry, jobId: string, port: number): string {
  const { workerId } = registry.register({
    deployment: 'qwen',
    jobId,
    restartCount: 0,
    index: 0,
    host: '127.0.0.1',
    port,
    gpus: [0],
    engine: 'mock',
    model: '/models/qwen',
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
