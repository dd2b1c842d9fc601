/**
 * The registry's own records of node jobs and workers (mutable, never handed out), the
 * copies it hands out instead (`WorkerInfo`, `JobInfo`), and the fencing rule: a worker of
 * an ended or superseded incarnation of its job is told to exit.
 */
import type { RoutableWorker } from '../view.js';
import type { JobInfo, WorkerInfo } from '../registry.js';

/** One worker as the registry keeps it: the fields it copies out, and its bookkeeping. */
export interface WorkerRecord extends Pick<
  WorkerInfo,
  | 'id'
  | 'deployment'
  | 'jobId'
  | 'restartCount'
  | 'index'
  | 'host'
  | 'port'
  | 'node'
  | 'gpus'
  | 'engine'
  | 'model'
  | 'state'
  | 'registeredAt'
  | 'lastHeartbeat'
  | 'requestsServed'
> {
  reason: string | undefined;
  goneAt: number | undefined;
  failures: number;
  ejectedUntil: number | undefined;
  logFile: string | undefined;
  pid: number | undefined;
  /** When its hand-over was announced (once per record). */
  handedOverAt: number | undefined;
  /** The object the proxy holds: stable for the worker's life so `inFlight` accumulates. */
  routable: RoutableWorker;
  /** Requests in flight to it through the data-plane processes, as they last reported. */
  dataPlaneInFlight: number;
}

/** One node job as the registry keeps it. */
export interface JobRecord {
  jobId: string;
  deployment: string;
  restartCount: number;
  registeredAt: number | undefined;
  endedIncarnation: number | undefined;
  workers: Set<string>;
}

/** The registry's jobs and workers and its clock, shared by its parts. */
export interface RegistryStore {
  now: () => number;
  jobs: Map<string, JobRecord>;
  workers: Map<string, WorkerRecord>;
}

/** The record of a job, created empty on first mention. */
export function jobRecord(store: RegistryStore, jobId: string, deployment: string): JobRecord {
  let job = store.jobs.get(jobId);
  if (job === undefined) {
    job = {
      jobId,
      deployment,
      restartCount: 0,
      registeredAt: undefined,
      endedIncarnation: undefined,
      workers: new Set(),
    };
    store.jobs.set(jobId, job);
  }
  return job;
}

/** Why a worker of `restartCount` must exit, or `undefined` when its incarnation is current. */
export function fencedMessage(job: JobRecord, restartCount: number): string | undefined {
  if (restartCount < job.restartCount) {
    return `job ${job.jobId} has a newer incarnation (restart count ${job.restartCount} > ${restartCount}): exit`;
  }
  if (job.endedIncarnation !== undefined && restartCount <= job.endedIncarnation) {
    return `job ${job.jobId} incarnation ${restartCount} has ended: exit`;
  }
  return undefined;
}

/** The URL the proxy sends a worker's requests to (an IPv6 host in brackets). */
export function baseUrlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A worker as the status views see it: a copy. */
export function workerInfo(w: WorkerRecord): WorkerInfo {
  const info: WorkerInfo = {
    id: w.id,
    deployment: w.deployment,
    jobId: w.jobId,
    restartCount: w.restartCount,
    index: w.index,
    host: w.host,
    port: w.port,
    baseUrl: w.routable.baseUrl,
    node: w.node,
    gpus: [...w.gpus],
    engine: w.engine,
    model: w.model,
    state: w.state,
    registeredAt: w.registeredAt,
    lastHeartbeat: w.lastHeartbeat,
    inFlight: w.routable.inFlight + w.dataPlaneInFlight,
    requestsServed: w.requestsServed,
  };
  if (w.reason !== undefined) info.reason = w.reason;
  if (w.routable.load !== undefined) info.load = { ...w.routable.load };
  if (w.ejectedUntil !== undefined) info.ejectedUntil = w.ejectedUntil;
  if (w.logFile !== undefined) info.logFile = w.logFile;
  if (w.pid !== undefined) info.pid = w.pid;
  return info;
}

/** A job as the reconciler's planner sees it: a copy. */
export function jobInfo(job: JobRecord): JobInfo {
  const info: JobInfo = {
    jobId: job.jobId,
    deployment: job.deployment,
    restartCount: job.restartCount,
    workerIds: [...job.workers],
  };
  if (job.registeredAt !== undefined) info.registeredAt = job.registeredAt;
  if (job.endedIncarnation !== undefined) info.endedIncarnation = job.endedIncarnation;
  return info;
}
