/**
 * The reconciler's side of the registry: the plain-data snapshot it plans from (which also
 * drops gone workers past their retention), the look-ups, and the changes its plans make to
 * node jobs and their workers (incarnations, ends, drains, timeouts, forgetting).
 */
import type { JobLedger } from '../roles.js';
import type { WorkerInfo } from '../registry.js';
import type { Lifecycle } from './lifecycle.js';
import { jobInfo, jobRecord, workerInfo, type RegistryStore } from './records.js';
import type { Routing } from './routing.js';

/** The job ledger of a registry; gone workers are kept `goneRetentionMs` for status views. */
export function createJobLedger(
  store: RegistryStore,
  routing: Routing,
  lifecycle: Lifecycle,
  goneRetentionMs: number,
): JobLedger {
  const { now, jobs, workers } = store;
  const { retire, drainInService } = lifecycle;

  return {
    noteIncarnation(jobId, deployment, restartCount) {
      const job = jobRecord(store, jobId, deployment);
      lifecycle.advance(job, restartCount, `job requeued (restart count ${restartCount})`);
    },

    endJob(jobId, reason, restartCount) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      const upTo = restartCount ?? job.restartCount;
      job.endedIncarnation = Math.max(job.endedIncarnation ?? -1, upTo);
      for (const id of job.workers) {
        const w = workers.get(id);
        if (w !== undefined && w.restartCount <= upTo) retire(w, 'gone', reason);
      }
    },

    drainJob(jobId, reason) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      for (const id of job.workers) drainInService(workers.get(id), reason);
    },

    drainWorker(workerId, reason) {
      drainInService(workers.get(workerId), reason);
    },

    markGone(workerId, reason) {
      const w = workers.get(workerId);
      if (w !== undefined) retire(w, 'gone', reason);
    },

    forgetJob(jobId) {
      const job = jobs.get(jobId);
      if (job === undefined) return;
      for (const id of job.workers) {
        const w = workers.get(id);
        if (w === undefined) continue;
        retire(w, 'gone', 'job left the cluster');
        workers.delete(id);
        routing.deploymentWorkers(w.deployment)?.delete(id);
      }
      jobs.delete(jobId);
    },

    worker(workerId) {
      const w = workers.get(workerId);
      return w === undefined ? undefined : workerInfo(w);
    },

    workers(deployment) {
      const out: WorkerInfo[] = [];
      for (const w of workers.values()) {
        if (deployment === undefined || w.deployment === deployment) out.push(workerInfo(w));
      }
      return out;
    },

    silentWorkers(before) {
      const out: WorkerInfo[] = [];
      for (const w of workers.values()) {
        if (w.lastHeartbeat < before && w.state !== 'gone' && w.state !== 'failed') {
          out.push(workerInfo(w));
        }
      }
      return out;
    },

    job(jobId) {
      const job = jobs.get(jobId);
      return job === undefined ? undefined : jobInfo(job);
    },

    snapshot() {
      const cutoff = now() - goneRetentionMs;
      for (const [id, w] of workers) {
        if (w.goneAt !== undefined && w.goneAt < cutoff) {
          workers.delete(id);
          jobs.get(w.jobId)?.workers.delete(id);
          routing.deploymentWorkers(w.deployment)?.delete(id);
        }
      }
      return {
        jobs: [...jobs.values()].map(jobInfo),
        workers: [...workers.values()].map(workerInfo),
      };
    },
  };
}
