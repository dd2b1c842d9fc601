export {
  controllerPid,
  devClusterDir,
  devClusterScript,
  repoRoot,
  slurmConf,
  slurmEnv,
} from './dev-cluster.js';
export {
  cancelByNamePrefix,
  preempt,
  restartController,
  runSlurm,
  showJob,
  uniqueJobPrefix,
  waitForJob,
  withStoppedController,
} from './slurm-helpers.js';
export type { JobInfo, SlurmRun } from './slurm-helpers.js';
export { TEST_SECRET, startFakeScheduler } from './fake-scheduler.js';
export type { FakeScheduler, SchedulerCall } from './fake-scheduler.js';
export { metric } from './prometheus.js';
export { processAlive } from './processes.js';
export { until } from './until.js';
export { oneGpuDeployment, registerReadyWorker } from './registry-worker.js';
export { dataPlaneReport } from './data-plane.js';
