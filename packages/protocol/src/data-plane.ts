/**
 * What a data-plane process (`es-proxy`) needs from the scheduler besides the routing table,
 * and what it reports back: the contract between `@es/proxy`'s data-plane runner and the
 * scheduler.
 *
 * - The settings every data-plane process applies come in the watch stream's snapshot
 *   (`RoutingWatchEvent` of type `snapshot`, field `dataPlane`), signed like every line, so
 *   a standalone `es-proxy` started with nothing but the secret file and the scheduler's
 *   URL serves exactly like the ones the scheduler started. Client keys travel as SHA-256
 *   hashes only.
 * - A report is a `POST` of {@link DATA_PLANE_ROUTES}`.report`, signed like a worker request
 *   (`signWorkerRequest`) with `deriveKeys(secret).dataPlaneKey`, sent every
 *   {@link DATA_PLANE_REPORT_MS}: who the process is, which table version it serves, its
 *   in-flight requests per worker, the workers it has ejected itself, the requests waiting
 *   in its queue per deployment, and the requests and continuations it completed since its
 *   last accepted report (for `/metrics` and the dashboard, aggregated over every process).
 *   The scheduler answers 204; a report it cannot verify is refused with 401 and changes
 *   nothing.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as v from 'valibot';

/** The data plane's routes on the scheduler's control listener. */
export const DATA_PLANE_ROUTES = {
  report: { method: 'POST', path: '/api/v1/data-plane/report' },
} as const;

/** How often a data-plane process reports (ms). */
export const DATA_PLANE_REPORT_MS = 1_000;

/**
 * A process whose last report is older than this (ms) is listed as `silent` by `es status`;
 * after 10 times this it is forgotten.
 */
export const DATA_PLANE_SILENT_MS = 5_000;

/** Most request records one report carries; the rest are counted in `droppedRecords`. */
export const DATA_PLANE_MAX_RECORDS = 20_000;

/** The hash under which a client key travels: hex SHA-256 of the key's UTF-8 bytes. */
export function clientKeyHash(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

const NonNegative = v.pipe(v.number(), v.minValue(0));
const NonNegativeInt = v.pipe(v.number(), v.integer(), v.minValue(0));

/** The settings a data-plane process serves with (the scheduler's flags of the same name). */
export const DataPlaneSettingsSchema = v.object({
  /** `clientKeyHash` of each `--api-key`; empty: no client authentication. */
  clientKeyHashes: v.array(v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/))),
  corsOrigins: v.array(v.string()),
  exposeSelectedEndpoint: v.boolean(),
  maxContinuations: NonNegativeInt,
  stallTimeoutMs: NonNegative,
  bodyBudgetBytes: NonNegative,
  clientIdleTimeoutMs: NonNegative,
  maxConnections: NonNegativeInt,
  /**
   * Longest wait of a request for a deployment that scales from zero while it has no worker
   * (`--cold-start-wait`); absent: the proxy's default (10 min).
   */
  coldStartTimeoutMs: v.optional(NonNegative),
});
export type DataPlaneSettings = v.InferOutput<typeof DataPlaneSettingsSchema>;

/**
 * One completed request as `@es/proxy` records it (`ProxyRequestRecord`): the fields the
 * scheduler's metrics read are checked, the rest passed through.
 */
export const DataPlaneRequestRecordSchema = v.looseObject({
  requestId: v.string(),
  path: v.string(),
  stream: v.boolean(),
  status: v.pipe(v.number(), v.integer()),
  outcome: v.string(),
  latencyMs: NonNegative,
  queuedMs: NonNegative,
  retries: NonNegativeInt,
});

/** One continuation as `@es/proxy` records it (`ContinuationRecord`). */
export const DataPlaneContinuationRecordSchema = v.looseObject({
  requestId: v.string(),
  deployment: v.string(),
  fromWorker: v.string(),
  outcome: v.picklist(['continued', 'inexact', 'refused', 'failed']),
  reason: v.string(),
  cause: v.string(),
  generatedTokens: NonNegativeInt,
});

/** The body of a report. */
export const DataPlaneReportSchema = v.object({
  /** Stable for the life of the process: `<host>:<pid>` unless given (`es-proxy --id`). */
  id: v.pipe(v.string(), v.minLength(1), v.maxLength(200)),
  host: v.string(),
  pid: NonNegativeInt,
  /** The client address it serves, e.g. `http://0.0.0.0:8780`. */
  listen: v.string(),
  /** Epoch ms the process started. */
  startedAt: NonNegative,
  /** Reports sent by this process, this one included: a gap means reports were lost. */
  seq: NonNegativeInt,
  /** The version of the routing table it serves, and when it last heard from the stream. */
  tableVersion: NonNegativeInt,
  tableAt: NonNegative,
  /** Whether its watch stream is open now. */
  subscribed: v.boolean(),
  /** Requests in flight through this process, per worker id. */
  inFlight: v.record(v.string(), NonNegativeInt),
  /** Workers this process has ejected for its own failed attempts (passive ejection). */
  ejected: v.array(v.string()),
  /**
   * Requests waiting in its queue for a worker, per deployment (deployments with none left
   * out): demand the scheduler cannot see otherwise, e.g. for a deployment scaled to zero.
   */
  queued: v.optional(v.record(v.string(), NonNegativeInt)),
  requests: v.pipe(v.array(DataPlaneRequestRecordSchema), v.maxLength(DATA_PLANE_MAX_RECORDS)),
  continuations: v.pipe(
    v.array(DataPlaneContinuationRecordSchema),
    v.maxLength(DATA_PLANE_MAX_RECORDS),
  ),
  /** Records not sent because a report was full or the scheduler unreachable too long. */
  droppedRecords: NonNegativeInt,
});
export type DataPlaneReport = v.InferOutput<typeof DataPlaneReportSchema>;

/**
 * The state file an `es-proxy` primary writes (`--state-file`; the scheduler's is
 * `<logDir>/data-plane.json`) once every process listens, and again after a respawn: what
 * the scheduler re-adopts and what reliability runs read.
 */
export const DataPlaneStateSchema = v.object({
  /** The primary (the leader of its process group). */
  pid: v.pipe(v.number(), v.integer(), v.minValue(2)),
  host: v.string(),
  port: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)),
  processes: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** The pids of the processes that serve, one per slot. */
  workers: v.array(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** Epoch ms the primary started. */
  startedAt: v.number(),
});
export type DataPlaneState = v.InferOutput<typeof DataPlaneStateSchema>;

/** The state file at `file`, or undefined when it is absent or not an es-proxy's state. */
export function readDataPlaneState(file: string): DataPlaneState | undefined {
  try {
    const parsed = v.safeParse(DataPlaneStateSchema, JSON.parse(readFileSync(file, 'utf8')));
    return parsed.success ? parsed.output : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `state` to `file` (0600) atomically: a reader sees the old file or the new one. */
export function writeDataPlaneState(file: string, state: DataPlaneState): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(state)}\n`, { mode: 0o600 });
  try {
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}
