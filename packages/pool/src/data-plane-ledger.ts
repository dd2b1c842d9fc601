/**
 * The scheduler's record of its data-plane processes (`es-proxy`), built from their reports
 * (`DATA_PLANE_ROUTES.report` of `@es/protocol`): who each process is, when it last
 * reported, which table version it serves, what it has in flight and ejected, and how many
 * reports were lost on the way. The requests and continuations each report carries are
 * handed on once (to `/metrics` and the dashboard).
 */
import { DATA_PLANE_SILENT_MS } from '@es/protocol';
import type { DataPlaneReport } from '@es/protocol';

/** `serving`: reported within `silentMs`; `silent`: not since (forgotten after 10 times). */
export type DataPlaneProcessState = 'serving' | 'silent';

/** One data-plane process as its last report described it (a copy). */
export interface DataPlaneProcess {
  id: string;
  host: string;
  pid: number;
  /** The client address it serves, e.g. `http://0.0.0.0:8780`. */
  listen: string;
  /** Epoch ms the process started. */
  startedAt: number;
  /** Epoch ms (the ledger's clock) of its last accepted report. */
  lastReportAt: number;
  /** The `seq` of its last accepted report. */
  seq: number;
  /** Reports that never arrived (gaps in `seq` since it started). */
  missedReports: number;
  /** The routing-table version it serves, and when it last heard from the stream. */
  tableVersion: number;
  tableAt: number;
  /** Whether its watch stream was open at its last report. */
  subscribed: boolean;
  /** Requests in flight through it, per worker id. */
  inFlight: Record<string, number>;
  /** Workers it has ejected for its own failed attempts. */
  ejected: string[];
  /** Requests waiting in its queue for a worker, per deployment (none: left out). */
  queued: Record<string, number>;
  /** Records it could not send (reports full, or the scheduler unreachable too long). */
  droppedRecords: number;
  state: DataPlaneProcessState;
}

/** The records one report carries. */
export type DataPlaneRecords = Pick<DataPlaneReport, 'requests' | 'continuations'>;

/** Options of {@link createDataPlaneLedger}. */
export interface DataPlaneLedgerOptions {
  /** Called once per accepted report with its records (not for a stale or repeated `seq`). */
  onRecords?: (records: DataPlaneRecords, process: DataPlaneProcess) => void;
  /** Silence after which a process is `silent` (default `DATA_PLANE_SILENT_MS`). */
  silentMs?: number;
  /** Clock (default `Date.now`). */
  now?: () => number;
}

/** What {@link DataPlaneLedger.record} did with a report. */
export type DataPlaneReportResult = 'recorded' | 'stale';

/** See {@link createDataPlaneLedger}. */
export interface DataPlaneLedger {
  /**
   * Record a verified report. A report of the same process start with a `seq` not above the
   * last one's is `stale`: its records were counted already (a report re-sent after its
   * answer was lost) and it changes nothing.
   */
  record(report: DataPlaneReport): DataPlaneReportResult;
  /** The processes heard from within 10 × `silentMs`, each with its state, by id. */
  list(): DataPlaneProcess[];
  /** Requests in flight per worker, summed over the `serving` processes. */
  inFlightByWorker(): Map<string, number>;
  /**
   * Requests waiting for a worker per deployment, summed over the `serving` processes
   * (deployments with none left out): the data plane's share of the demand.
   */
  queuedByDeployment(): Map<string, number>;
}

type Entry = Omit<DataPlaneProcess, 'state'>;

/**
 * The ledger of data-plane processes.
 * @example
 * const ledger = createDataPlaneLedger({
 *   onRecords: ({ requests, continuations }) => {
 *     for (const r of requests) admin.onRequestComplete(r);
 *     for (const c of continuations) admin.onContinuation(c);
 *   },
 * });
 * ledger.record(report); // after its signature is verified
 * ledger.list(); // [{ id, listen, state: 'serving', tableVersion, ... }]
 */
export function createDataPlaneLedger(options: DataPlaneLedgerOptions = {}): DataPlaneLedger {
  const now = options.now ?? Date.now;
  const silentMs = options.silentMs ?? DATA_PLANE_SILENT_MS;
  const entries = new Map<string, Entry>();

  const forgetOld = (at: number) => {
    for (const [id, entry] of entries) {
      if (at - entry.lastReportAt > 10 * silentMs) entries.delete(id);
    }
  };
  /** `counts` of every `serving` process, summed by key. */
  const sumServing = (counts: (entry: Entry) => Record<string, number>) => {
    const at = now();
    const totals = new Map<string, number>();
    for (const entry of entries.values()) {
      if (at - entry.lastReportAt > silentMs) continue;
      for (const [key, n] of Object.entries(counts(entry))) {
        totals.set(key, (totals.get(key) ?? 0) + n);
      }
    }
    return totals;
  };
  const view = (entry: Entry, at: number): DataPlaneProcess => ({
    ...entry,
    inFlight: { ...entry.inFlight },
    ejected: [...entry.ejected],
    queued: { ...entry.queued },
    state: at - entry.lastReportAt > silentMs ? 'silent' : 'serving',
  });

  return {
    record(report) {
      const at = now();
      forgetOld(at);
      const previous = entries.get(report.id);
      const sameStart =
        previous !== undefined &&
        previous.startedAt === report.startedAt &&
        previous.pid === report.pid;
      if (sameStart && report.seq <= previous.seq) return 'stale';
      // A new process under a known id (restarted) starts its count of lost reports over;
      // its first report may follow reports sent while the scheduler was away.
      const missed = sameStart ? previous.missedReports + (report.seq - previous.seq - 1) : 0;
      const entry: Entry = {
        id: report.id,
        host: report.host,
        pid: report.pid,
        listen: report.listen,
        startedAt: report.startedAt,
        lastReportAt: at,
        seq: report.seq,
        missedReports: missed,
        tableVersion: report.tableVersion,
        tableAt: report.tableAt,
        subscribed: report.subscribed,
        inFlight: { ...report.inFlight },
        ejected: [...report.ejected],
        queued: { ...report.queued },
        droppedRecords: report.droppedRecords,
      };
      entries.set(report.id, entry);
      options.onRecords?.(
        { requests: report.requests, continuations: report.continuations },
        view(entry, at),
      );
      return 'recorded';
    },
    list() {
      const at = now();
      forgetOld(at);
      return [...entries.values()]
        .map((entry) => view(entry, at))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
    inFlightByWorker: () => sumServing((entry) => entry.inFlight),
    queuedByDeployment: () => sumServing((entry) => entry.queued),
  };
}
