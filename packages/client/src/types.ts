/**
 * The wire format of the scheduler's admin/status API (`/api/v1/admin/*`). The server
 * (`@es/admin`) builds exactly these shapes, so a tool that imports this package gets the
 * same types the scheduler answers with.
 */

/** Lifecycle of one engine instance. */
export type WorkerStateName = 'starting' | 'loading' | 'ready' | 'draining' | 'failed' | 'gone';

/** One engine instance (a GPU slice of a node job). */
export interface WorkerView {
  id: string;
  deployment: string;
  jobId: string;
  node: string;
  /** GPU indices of its slice. */
  gpus: number[];
  baseUrl: string;
  state: WorkerStateName;
  /** Why it is draining, failed or gone. */
  reason?: string;
  /** Requests the proxy has open on it now. */
  inFlight: number;
  /** Attempts on it that ended without a fault of the worker (any status below 500). */
  requestsServed: number;
  /**
   * Requests whose last attempt was on this worker and that ended in an error: a 5xx, or a
   * stream cut with an error event (counted here, not in `requestsServed`).
   */
  requestErrors: number;
  /** The engine's own load report (running/waiting requests, KV cache use), when known. */
  load?: { running?: number; waiting?: number; kvCacheUsage?: number };
  /** Passively ejected from routing after repeated failures. */
  ejected: boolean;
  registeredAt: number;
  lastHeartbeat: number;
  /** The engine's log file on its node, when the worker reported one. */
  logFile?: string;
}

/** One step of a job's path PENDING(reason) → RUNNING → loading → ready. */
export interface ProgressStep {
  phase: 'pending' | 'running' | 'loading' | 'ready' | 'ended';
  /** ms since epoch when the job entered this phase. */
  at: number;
  /** SLURM reason (pending) or why it ended. */
  detail?: string;
}

/** One node job. */
export interface JobView {
  jobId: string;
  deployment: string;
  /** SLURM state (`PENDING`, `RUNNING`, `PREEMPTED` ...). */
  state: string;
  /** SLURM's reason (e.g. `Priority`, `Resources`), '' when none. */
  reason: string;
  /** Node list, '' while pending. */
  nodes: string;
  restartCount: number;
  ageSeconds: number;
  timeLeftSeconds?: number;
  runningSeconds?: number;
  /** Draining ahead of its time limit (a successor is on its way). */
  retiring: boolean;
  /** A worker announced a drain (preemption, scancel, admin drain). */
  drained: boolean;
  cancelReason?: string;
  endedAt?: number;
  /** A pending job's expected start (ms since epoch), as SLURM estimates it. */
  expectedStart?: number;
  /** When the scheduler released its current incarnation from SLURM's requeue begin time (ms). */
  releasedAt?: number;
  /** The phases seen so far, oldest first. */
  progress: ProgressStep[];
  /** One line such as `PENDING(Priority) 40s → RUNNING 2s → loading 15s → ready`. */
  progressLine: string;
  workerIds: string[];
}

/** One deployment (a model served by a set of node jobs). */
export interface DeploymentView {
  name: string;
  jobName: string;
  maxNodes: number;
  readyWorkers: number;
  /** Submissions in flight or not yet seen in the cluster's list. */
  submitting: number;
  /** Requests waiting for capacity in the proxy's queue. */
  queued: number;
  backoff?: { kind: 'transient' | 'policy'; until: number; attempts: number; message: string };
  /** A permanent failure stopped submissions until it is fixed. */
  permanentError?: string;
  /**
   * Its last `count` jobs in a row ended before any worker was ready (the batch script or
   * the engine fails to start); the next replacement waits until `until` (ms).
   */
  launchFailures?: { count: number; until: number; lastJobId: string; message: string };
  /**
   * Set when the deployment scales with its load (`minNodes` below `maxNodes`): the target
   * between the two, the mean load over the window (requests in flight and queued) and the
   * nodes it needs, the policy, and since when the need has been above or below the target.
   */
  scaling?: {
    minNodes: number;
    target: number;
    load: number;
    need: number;
    kvCacheUsage?: number;
    policy: {
      targetInFlight: number;
      targetKvCacheUsage: number;
      windowMs: number;
      upDelayMs: number;
      downDelayMs: number;
    };
    upSince?: number;
    downSince?: number;
    changedAt?: number;
  };
  lastErrors: { at: number; action: string; message: string }[];
  jobs: JobView[];
  workers: WorkerView[];
}

/** `GET /api/v1/admin/status`. */
export interface StatusResponse {
  schedulerId: string;
  /** `slurm` or `local`. */
  provider: string;
  /** The reconcile loop is running. */
  running: boolean;
  now: number;
  startedAt: number;
  lastTickAt?: number;
  listFailures: number;
  lastListError?: string;
  deployments: DeploymentView[];
  /** The data-plane processes (`es-proxy`) that report to this scheduler. */
  dataPlane?: DataPlaneView;
}

/** One data-plane process as its last report described it. */
export interface DataPlaneProcessView {
  /** `<host>:<pid>` unless given (`es-proxy --id`). */
  id: string;
  host: string;
  pid: number;
  /** The client address it serves, e.g. `http://0.0.0.0:8780`. */
  listen: string;
  /** `serving`: reported within `DATA_PLANE_SILENT_MS`; `silent`: not since. */
  state: 'serving' | 'silent';
  startedAt: number;
  /** ms since epoch of its last report, and how long ago that was (s). */
  lastReportAt: number;
  lastContactSeconds: number;
  /** The routing-table version it serves (the scheduler's is `DataPlaneView.tableVersion`). */
  tableVersion: number;
  /** Whether its watch stream was open at its last report. */
  subscribed: boolean;
  /** Requests in flight through it (all workers). */
  inFlight: number;
  /** Workers it has ejected for its own failed attempts. */
  ejected: string[];
  /** Reports that never arrived, and records it could not send. */
  missedReports: number;
  droppedRecords: number;
}

/** `GET /api/v1/admin/data-plane`: the scheduler's table version and its data plane. */
export interface DataPlaneView {
  /** The version of the routing table the scheduler streams now. */
  tableVersion: number;
  /** Watch streams open now. */
  subscribers: number;
  processes: DataPlaneProcessView[];
}

/** One lifecycle event. */
export interface EventView {
  type: string;
  at: number;
  deployment: string;
  jobId?: string;
  workerId?: string;
  reason?: string;
}

/** `GET /api/v1/admin/events`. */
export interface EventsResponse {
  events: EventView[];
}

/** One 10-second sample of the traffic. */
export interface SeriesSample {
  /** End of the interval, ms since epoch. */
  at: number;
  /** Requests finished per second over the interval. */
  requestsPerSecond: number;
  /** Completion tokens per second. */
  tokensPerSecond: number;
  /** Mean time to first byte (ms), absent when no request finished. */
  ttfbMs?: number;
  /** Errors per second: responses with status >= 500 and streams cut with an error event. */
  errorsPerSecond: number;
}

/** `GET /api/v1/admin/series`. */
export interface SeriesResponse {
  intervalMs: number;
  samples: SeriesSample[];
}

/** `POST /api/v1/admin/deployments/:name/scale`. */
export interface ScaleResponse {
  deployment: string;
  previousMaxNodes: number;
  maxNodes: number;
  /** Jobs cancelled at once because they were over the new maximum. */
  cancelled: string[];
}

/** `POST /api/v1/admin/workers/:id/drain` and `/api/v1/admin/jobs/:id/drain`. */
export interface DrainResponse {
  /** Workers taken out of routing. */
  drained: string[];
  /** Job cancelled once its in-flight requests finished (job drains only). */
  jobId?: string;
}

/** `GET /api/v1/admin/logs/:id`. */
export interface LogsResponse {
  /** The file read. */
  file: string;
  /** Byte offset after the returned text: pass it back as `since` to follow. */
  offset: number;
  text: string;
}

/** `POST /api/v1/admin/stop`. */
export interface StopResponse {
  stopping: true;
  cancelJobs: boolean;
}

/** Error body of the admin API. */
export interface ApiErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** A worker's `status` on the seed's public routes. */
export type SeedWorkerStatus = 'READY' | 'LOADING' | 'OFFLINE';

/** One worker of `GET /cluster_status`, in the seed's field names. */
export interface ClusterWorker {
  /**
   * `<job id>.<restart>.<index>`: only with the admin key (it names the SLURM job), as are
   * `hostname`, `ip_address`, `port`, `base_url` and `slurm_job_id`.
   */
  worker_id?: string;
  status: SeedWorkerStatus;
  tensor_parallel_size: number;
  requests_served: number;
  model_name?: string;
  engine?: string;
  /** This implementation's deployment name (absent on the seed's own scheduler). */
  deployment?: string;
  [field: string]: unknown;
}

/** The seed's facts about what is served (one model, or one deployment). */
export interface ClusterFacts {
  model: string;
  engine: string;
  tensor_parallel_size: number;
  dp_per_node: number;
  max_nodes: number;
  total_nodes_active: number;
  total_workers: number;
  ready_workers: number;
  loading_workers: number;
  offline_workers: number;
}

/**
 * `GET /cluster_status`: public (no key), in the seed's field names, so the same view works
 * against the original scheduler. `deployments` is this implementation's per-deployment view.
 */
export interface ClusterStatusResponse extends ClusterFacts {
  pending_slurm_jobs: number;
  workers: ClusterWorker[];
  deployments?: (Partial<ClusterFacts> & {
    name: string;
    permanent_error?: string | null;
    backoff?: string | null;
    launch_failures?: string | null;
    /**
     * Public view: which of those texts is set (`permanent_error`, `backoff`,
     * `launch_failures`), the texts themselves only with the admin key.
     */
    problem?: string | null;
  })[];
}

/** `POST /api/v1/admin/dashboard/login-token`: a one-time dashboard login link. */
export interface DashboardLoginResponse {
  /** `/dashboard?login=<token>`: open it once, within `expiresInSeconds`. */
  path: string;
  token: string;
  expiresInSeconds: number;
}

/** `GET /health`. */
export interface HealthResponse {
  status: string;
  ready_workers: number;
  [field: string]: unknown;
}

/** `GET /v1/models` (OpenAI's list). */
export interface ModelsResponse {
  object: 'list';
  data: { id: string; object: string; owned_by?: string; [field: string]: unknown }[];
}

/** What `SchedulerClient.chat` sends: one OpenAI chat completion, not streamed. */
export interface ChatRequest {
  model: string;
  messages: { role: 'system' | 'user' | 'assistant'; content: string }[];
  max_tokens?: number;
  temperature?: number;
}

/** The parts of an OpenAI chat completion `es test` reads. */
export interface ChatResponse {
  id: string;
  model: string;
  choices: {
    index: number;
    message: { role: string; content: string | null; reasoning_content?: string | null };
    finish_reason: string | null;
  }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}
