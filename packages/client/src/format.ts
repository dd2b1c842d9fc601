/**
 * Pure renderers of the status API as aligned text tables (what `es status` prints).
 */
import type { DeploymentView, JobView, StatusResponse, WorkerView } from './types.js';

/** `90` → `1m30s`, `3700` → `1h01m`; `-` when unknown. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '-';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(s / 3600);
  if (h < 48) return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/** Rows as columns padded to the widest cell (the last column is not padded). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function gpuSlice(gpus: number[]): string {
  if (gpus.length === 0) return '-';
  const sorted = [...gpus].sort((a, b) => a - b);
  const first = sorted[0] ?? 0;
  const last = sorted[sorted.length - 1] ?? 0;
  const contiguous = last - first === sorted.length - 1;
  return contiguous && sorted.length > 1 ? `${first}-${last}` : sorted.join(',');
}

function load(w: WorkerView): string {
  const parts = [`${w.inFlight} in-flight`];
  if (w.load?.running !== undefined) parts.push(`${w.load.running} run`);
  if (w.load?.waiting !== undefined) parts.push(`${w.load.waiting} wait`);
  if (w.load?.kvCacheUsage !== undefined)
    parts.push(`kv ${Math.round(w.load.kvCacheUsage * 100)}%`);
  return parts.join(', ');
}

function jobState(j: JobView): string {
  return j.reason && j.state !== 'RUNNING' ? `${j.state} (${j.reason})` : j.state;
}

/** The deployments table. */
export function formatDeployments(status: StatusResponse): string {
  return table(
    ['DEPLOYMENT', 'READY', 'JOBS', 'MAX', 'QUEUED', 'NOTE'],
    status.deployments.map((d) => [
      d.name,
      `${d.readyWorkers}/${d.workers.filter((w) => w.state !== 'gone').length}`,
      String(d.jobs.filter((j) => j.endedAt === undefined).length),
      String(d.maxNodes),
      String(d.queued),
      note(d),
    ]),
  );
}

function note(d: DeploymentView): string {
  if (d.permanentError) return `STOPPED: ${d.permanentError}`;
  const waitFor = (until: number) =>
    formatDuration(Math.max(0, Math.round((until - Date.now()) / 1000)));
  if (d.backoff) {
    return `backoff ${d.backoff.kind} ${waitFor(d.backoff.until)}: ${d.backoff.message}`;
  }
  if (d.launchFailures) {
    const { count, lastJobId, message, until } = d.launchFailures;
    return `${count} job(s) failed at launch (last ${lastJobId}: ${message}; es logs ${lastJobId}), next in ${waitFor(until)}`;
  }
  if (d.submitting > 0) return `${d.submitting} submitting`;
  return '';
}

/** The nodes (jobs) table. */
export function formatJobs(status: StatusResponse): string {
  const rows: string[][] = [];
  for (const d of status.deployments) {
    for (const j of d.jobs) {
      rows.push([
        j.jobId,
        d.name,
        jobState(j),
        j.nodes || '-',
        // SLURM reports the whole limit for a job that has not started: not time *left*.
        j.state === 'RUNNING' ? formatDuration(j.timeLeftSeconds) : '-',
        String(j.restartCount),
        formatDuration(j.ageSeconds),
        j.progressLine,
      ]);
    }
  }
  return table(['JOB', 'DEPLOYMENT', 'STATE', 'NODE', 'LEFT', 'RESTARTS', 'AGE', 'PROGRESS'], rows);
}

/** The workers table. */
export function formatWorkers(status: StatusResponse): string {
  const rows: string[][] = [];
  for (const d of status.deployments) {
    for (const w of d.workers) {
      rows.push([
        w.id,
        w.jobId,
        w.node,
        `${w.state}${w.ejected ? ' (ejected)' : ''}`,
        gpuSlice(w.gpus),
        load(w),
        String(w.requestsServed),
        String(w.requestErrors),
        w.reason ?? '',
      ]);
    }
  }
  return table(
    ['WORKER', 'JOB', 'NODE', 'STATE', 'GPUS', 'LOAD', 'SERVED', 'ERRORS', 'REASON'],
    rows,
  );
}

/** Everything `es status` prints. */
export function formatStatus(status: StatusResponse): string {
  const header = `scheduler ${status.schedulerId} (${status.provider})${
    status.running ? '' : ' [reconciler stopped]'
  }${status.listFailures > 0 ? `  cluster list failing (${status.listFailures}x): ${status.lastListError ?? ''}` : ''}`;
  const errors = status.deployments.flatMap((d) =>
    d.lastErrors.slice(-3).map((e) => `  ${d.name} ${e.action}: ${e.message}`),
  );
  return [
    header,
    '',
    formatDeployments(status),
    '',
    formatJobs(status),
    '',
    formatWorkers(status),
    ...(errors.length > 0 ? ['', 'recent provider errors:', ...errors] : []),
  ].join('\n');
}
