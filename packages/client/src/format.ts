/**
 * Pure renderers of the status API as aligned text tables (what `es status` prints).
 */
import type {
  ClusterFacts,
  ClusterStatusResponse,
  DataPlaneView,
  DeploymentView,
  JobView,
  StatusResponse,
  WorkerView,
} from './types.js';

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

function jobState(j: JobView, now: number): string {
  const notes: string[] = [];
  if (j.reason && j.state !== 'RUNNING') notes.push(j.reason);
  if (j.state === 'PENDING' && j.expectedStart !== undefined) {
    const inSeconds = Math.round((j.expectedStart - now) / 1000);
    notes.push(inSeconds > 0 ? `expected start in ${formatDuration(inSeconds)}` : 'starts now');
  }
  if (j.state === 'PENDING' && j.releasedAt !== undefined) notes.push('released');
  return notes.length > 0 ? `${j.state} (${notes.join(', ')})` : j.state;
}

/** The deployments table. */
export function formatDeployments(status: StatusResponse): string {
  // TARGET only when a deployment scales with its load (the others hold MAX).
  const scales = status.deployments.some((d) => d.scaling !== undefined);
  return table(
    ['DEPLOYMENT', 'READY', 'JOBS', ...(scales ? ['TARGET'] : []), 'MAX', 'QUEUED', 'NOTE'],
    status.deployments.map((d) => [
      d.name,
      `${d.readyWorkers}/${d.workers.filter((w) => w.state !== 'gone').length}`,
      String(d.jobs.filter((j) => j.endedAt === undefined).length),
      ...(scales ? [d.scaling === undefined ? String(d.maxNodes) : scalingCell(d.scaling)] : []),
      String(d.maxNodes),
      String(d.queued),
      note(d),
    ]),
  );
}

/** `2 (min 0, load 13.5 → 2, up in 40s)`: the target, its floor, the load and the need. */
function scalingCell(s: NonNullable<DeploymentView['scaling']>): string {
  const parts = [`min ${s.minNodes}`, `load ${s.load.toFixed(1)} → ${s.need}`];
  const left = (since: number, delayMs: number) =>
    formatDuration(Math.max(0, Math.round((since + delayMs - Date.now()) / 1000)));
  if (s.upSince !== undefined) parts.push(`up in ${left(s.upSince, s.policy.upDelayMs)}`);
  if (s.downSince !== undefined) parts.push(`down in ${left(s.downSince, s.policy.downDelayMs)}`);
  return `${s.target} (${parts.join(', ')})`;
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
        jobState(j, status.now),
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

function port(baseUrl: string): string {
  try {
    const url = new URL(baseUrl);
    return url.port || (url.protocol === 'https:' ? '443' : '80');
  } catch {
    return '-';
  }
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
        port(w.baseUrl),
        String(w.requestsServed),
        String(w.requestErrors),
        w.reason ?? '',
      ]);
    }
  }
  return table(
    ['WORKER', 'JOB', 'NODE', 'STATE', 'GPUS', 'LOAD', 'PORT', 'SERVED', 'ERRORS', 'REASON'],
    rows,
  );
}

/**
 * The data-plane processes: where each serves, whether it reports, how long ago it last
 * did, and the table version it serves against the scheduler's (`7/9`: two changes behind).
 */
export function formatDataPlane(dataPlane: DataPlaneView): string {
  const rows = dataPlane.processes.map((p) => [
    p.id,
    p.listen,
    `${p.state}${p.subscribed ? '' : ' (unsubscribed)'}`,
    `${formatDuration(p.lastContactSeconds)} ago`,
    `${p.tableVersion}/${dataPlane.tableVersion}`,
    String(p.inFlight),
    p.ejected.length === 0 ? '-' : p.ejected.join(','),
    [
      p.missedReports > 0 ? `${p.missedReports} reports lost` : '',
      p.droppedRecords > 0 ? `${p.droppedRecords} records dropped` : '',
    ]
      .filter((note) => note !== '')
      .join(', '),
  ]);
  return table(
    ['DATA PLANE', 'LISTEN', 'STATE', 'LAST CONTACT', 'TABLE', 'IN-FLIGHT', 'EJECTED', 'NOTE'],
    rows,
  );
}

/** The seed's facts as `Label: value` lines; `pending` is left out when undefined. */
function factLines(f: Partial<ClusterFacts>, pending: number | undefined): string[] {
  const nodes = `${f.total_nodes_active ?? 0} active / ${f.max_nodes ?? 0} max${
    pending === undefined ? '' : `, ${pending} pending`
  }`;
  return [
    `Model:        ${f.model ?? ''}`,
    `Engine:       ${f.engine ?? ''}`,
    `Parallelism:  TP=${f.tensor_parallel_size ?? 1}, DP=${f.dp_per_node ?? 0}/node`,
    `Nodes:        ${nodes}`,
    `Workers:      ${f.ready_workers ?? 0} ready, ${f.loading_workers ?? 0} loading, ${
      f.offline_workers ?? 0
    } offline`,
  ];
}

/**
 * The seed's facts of `GET /cluster_status`: model, engine, `TP=…, DP=…/node`, nodes
 * active/max/pending and workers ready/loading/offline; a block per deployment when there
 * are several.
 */
export function formatClusterFacts(cluster: ClusterStatusResponse): string {
  const deployments = cluster.deployments ?? [];
  if (deployments.length <= 1) return factLines(cluster, cluster.pending_slurm_jobs).join('\n');
  return [
    ...deployments.flatMap((d, i) => [
      ...(i > 0 ? [''] : []),
      `Deployment:   ${d.name}`,
      ...factLines(d, undefined),
    ]),
    '',
    `Pending jobs: ${cluster.pending_slurm_jobs}`,
  ].join('\n');
}

/**
 * The public workers table of `GET /cluster_status`: id, state (seed spelling), TP, requests
 * served. Without the admin key the scheduler names no worker (its id holds the job id): the
 * rows are numbered `#1`, `#2` ... instead.
 */
export function formatClusterWorkers(cluster: ClusterStatusResponse): string {
  const models = new Set(cluster.workers.map((w) => w.model_name ?? ''));
  const withModel = models.size > 1;
  return table(
    ['WORKER', ...(withModel ? ['MODEL'] : []), 'STATE', 'TP', 'SERVED'],
    cluster.workers.map((w, i) => [
      w.worker_id ?? `#${i + 1}`,
      ...(withModel ? [w.model_name ?? ''] : []),
      w.status,
      String(w.tensor_parallel_size),
      String(w.requests_served),
    ]),
  );
}

/**
 * What `es status` prints with only the scheduler's URL: the public view of
 * `GET /cluster_status` (no admin key needed), in the seed's layout of facts.
 */
export function formatPublicStatus(cluster: ClusterStatusResponse, url: string): string {
  return [
    `Elastic Serving at ${url} (public view)`,
    '',
    formatClusterFacts(cluster),
    '',
    formatClusterWorkers(cluster),
  ].join('\n');
}

/**
 * Everything `es status` prints with the admin key: the scheduler, the seed's facts when
 * `cluster` is given, then deployments, nodes (jobs) and workers with their nodes and ports.
 */
export function formatStatus(status: StatusResponse, cluster?: ClusterStatusResponse): string {
  const header = `scheduler ${status.schedulerId} (${status.provider})${
    status.running ? '' : ' [reconciler stopped]'
  }${status.listFailures > 0 ? `  cluster list failing (${status.listFailures}x): ${status.lastListError ?? ''}` : ''}`;
  const errors = status.deployments.flatMap((d) =>
    d.lastErrors.slice(-3).map((e) => `  ${d.name} ${e.action}: ${e.message}`),
  );
  return [
    header,
    '',
    ...(cluster === undefined ? [] : [formatClusterFacts(cluster), '']),
    formatDeployments(status),
    '',
    formatJobs(status),
    '',
    formatWorkers(status),
    ...(status.dataPlane === undefined || status.dataPlane.processes.length === 0
      ? []
      : ['', formatDataPlane(status.dataPlane)]),
    ...(errors.length > 0 ? ['', 'recent provider errors:', ...errors] : []),
  ].join('\n');
}
