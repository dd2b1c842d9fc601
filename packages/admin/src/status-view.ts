/**
 * The status read model: the reconciler's status and the registry's workers turned into the
 * wire format of `@es/client`, with each job's progress PENDING(reason) → RUNNING → loading →
 * ready. `buildStatus` is pure; the progress tracker only records when phases began.
 */
import type { PoolEvent, ReconcilerStatus, WorkerInfo } from '@es/pool';
import type { JobView, ProgressStep, StatusResponse, WorkerView } from '@es/client';

/** When each job entered each phase (fed from registry events and status polls). */
export interface ProgressTracker {
  observeEvent(event: PoolEvent): void;
  /** Record what a status poll shows (pending reasons, running, ended). */
  observeStatus(status: ReconcilerStatus, at: number): void;
  steps(jobId: string): ProgressStep[];
}

const JOBS_KEPT = 500;

/** The steps of the current incarnation: from the last pending step on. */
function sinceLastPending(steps: ProgressStep[]): ProgressStep[] {
  let from = 0;
  steps.forEach((s, i) => {
    if (s.phase === 'pending') from = i;
  });
  return steps.slice(from);
}

/** Create a {@link ProgressTracker}. */
export function createProgressTracker(): ProgressTracker {
  const jobs = new Map<string, ProgressStep[]>();
  const add = (jobId: string, step: ProgressStep) => {
    let steps = jobs.get(jobId);
    if (steps === undefined) {
      steps = [];
      jobs.set(jobId, steps);
      // Bounded like the event ring: the oldest jobs' history goes first.
      if (jobs.size > JOBS_KEPT) jobs.delete(jobs.keys().next().value as string);
    }
    const last = steps[steps.length - 1];
    if (last?.phase === step.phase) {
      if (step.detail !== undefined && step.detail !== last.detail) last.detail = step.detail;
      return;
    }
    // Phases only move forward (a second worker registering after the first is ready is
    // not "loading" again); a requeue starts over from pending, older steps stay.
    const rank = { pending: 0, running: 1, loading: 2, ready: 3, ended: 4 };
    if (last !== undefined && step.phase !== 'pending' && rank[step.phase] < rank[last.phase]) {
      return;
    }
    steps.push(step);
  };
  return {
    observeEvent(event) {
      if (event.jobId === undefined) return;
      switch (event.type) {
        case 'submitted':
          add(event.jobId, { phase: 'pending', at: event.at });
          break;
        case 'running':
          add(event.jobId, { phase: 'running', at: event.at });
          break;
        case 'registered':
          // A worker can register before the next list shows the job RUNNING: it is.
          if (!sinceLastPending(jobs.get(event.jobId) ?? []).some((s) => s.phase === 'running')) {
            add(event.jobId, { phase: 'running', at: event.at });
          }
          add(event.jobId, { phase: 'loading', at: event.at });
          break;
        case 'ready':
          add(event.jobId, { phase: 'ready', at: event.at });
          break;
        case 'preempted':
        case 'cancelled':
          add(event.jobId, { phase: 'ended', at: event.at, detail: event.type });
          break;
        default:
          break;
      }
    },
    observeStatus(status, at) {
      for (const d of status.deployments) {
        for (const j of d.jobs) {
          if (j.state === 'PENDING' || j.state === 'CONFIGURING') {
            // A job seen for the first time has waited its age; a requeued one since now.
            const since = jobs.has(j.jobId) ? at : at - j.ageSeconds * 1000;
            add(j.jobId, { phase: 'pending', at: since, detail: j.reason });
          } else if (j.state === 'RUNNING' && !jobs.has(j.jobId)) {
            // Adopted after a restart: start the history where we came in.
            add(j.jobId, {
              phase: 'running',
              at: at - (j.runningSeconds ?? 0) * 1000,
            });
          }
        }
      }
    },
    steps: (jobId) => (jobs.get(jobId) ?? []).map((s) => ({ ...s })),
  };
}

function secondsLabel(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** `PENDING(Priority) 40s → RUNNING 2s → loading 15s → ready`: each phase with its duration. */
export function progressLine(steps: ProgressStep[], now: number, state: string): string {
  if (steps.length === 0) return state;
  // Show the current incarnation (a requeue starts over).
  const shown = sinceLastPending(steps);
  return shown
    .map((step, i) => {
      const next = shown[i + 1];
      const name =
        step.phase === 'pending'
          ? `PENDING${step.detail ? `(${step.detail})` : ''}`
          : step.phase === 'running'
            ? 'RUNNING'
            : step.phase === 'ended'
              ? `ended${step.detail ? `(${step.detail})` : ''}`
              : step.phase;
      if (step.phase === 'ready' || step.phase === 'ended') {
        return next === undefined ? name : `${name} ${secondsLabel(next.at - step.at)}`;
      }
      return `${name} ${secondsLabel((next?.at ?? now) - step.at)}`;
    })
    .join(' → ');
}

function workerView(w: WorkerInfo, now: number, requestErrors: number): WorkerView {
  const view: WorkerView = {
    id: w.id,
    deployment: w.deployment,
    jobId: w.jobId,
    node: w.node,
    gpus: [...w.gpus],
    baseUrl: w.baseUrl,
    state: w.state,
    inFlight: w.inFlight,
    requestsServed: w.requestsServed,
    requestErrors,
    ejected: w.ejectedUntil !== undefined && w.ejectedUntil > now,
    registeredAt: w.registeredAt,
    lastHeartbeat: w.lastHeartbeat,
  };
  if (w.reason !== undefined) view.reason = w.reason;
  if (w.load !== undefined) view.load = { ...w.load };
  if (w.logFile !== undefined) view.logFile = w.logFile;
  return view;
}

/** Inputs of {@link buildStatus}. */
export interface StatusInput {
  status: ReconcilerStatus;
  now: number;
  startedAt: number;
  steps: (jobId: string) => ProgressStep[];
  queueDepth: Record<string, number>;
  /** Requests of a worker that ended in an error (`Metrics.requestErrors`); 0 when absent. */
  requestErrors?: (workerId: string) => number;
}

/** The `/api/v1/admin/status` body. Pure. */
export function buildStatus(input: StatusInput): StatusResponse {
  const { status, now } = input;
  const out: StatusResponse = {
    schedulerId: status.schedulerId,
    provider: status.provider,
    running: status.running,
    now,
    startedAt: input.startedAt,
    listFailures: status.listFailures,
    deployments: status.deployments.map((d) => {
      const workers = d.workers.map((w) => workerView(w, now, input.requestErrors?.(w.id) ?? 0));
      const jobs: JobView[] = d.jobs.map((j) => {
        const steps = input.steps(j.jobId);
        const job: JobView = {
          jobId: j.jobId,
          deployment: d.name,
          state: j.state,
          reason: j.reason,
          nodes: j.nodes,
          restartCount: j.restartCount,
          ageSeconds: j.ageSeconds,
          retiring: j.retiring,
          drained: j.drained,
          progress: steps,
          progressLine: progressLine(steps, now, j.state),
          workerIds: j.workers.map((w) => w.id),
        };
        if (j.timeLeftSeconds !== undefined) job.timeLeftSeconds = j.timeLeftSeconds;
        if (j.runningSeconds !== undefined) job.runningSeconds = j.runningSeconds;
        if (j.cancelReason !== undefined) job.cancelReason = j.cancelReason;
        if (j.endedAt !== undefined) job.endedAt = j.endedAt;
        if (j.expectedStart !== undefined) job.expectedStart = j.expectedStart;
        if (j.releasedAt !== undefined) job.releasedAt = j.releasedAt;
        return job;
      });
      const view: StatusResponse['deployments'][number] = {
        name: d.name,
        jobName: d.jobName,
        maxNodes: d.maxNodes,
        readyWorkers: d.readyWorkers,
        submitting: d.submitting,
        queued: input.queueDepth[d.name] ?? 0,
        lastErrors: d.lastErrors.map((e) => ({ ...e })),
        jobs,
        workers,
      };
      if (d.backoff !== undefined) view.backoff = { ...d.backoff };
      if (d.permanentError !== undefined) view.permanentError = d.permanentError;
      if (d.launchFailures !== undefined) view.launchFailures = { ...d.launchFailures };
      if (d.scaling !== undefined) {
        view.scaling = { ...d.scaling, policy: { ...d.scaling.policy } };
      }
      return view;
    }),
  };
  if (status.lastTickAt !== undefined) out.lastTickAt = status.lastTickAt;
  if (status.lastListError !== undefined) out.lastListError = status.lastListError;
  return out;
}
