/**
 * The data plane's reports to the scheduler (`DATA_PLANE_ROUTES.report`, signed like a
 * worker request with the data-plane key): who this process is, the table it serves, its
 * in-flight requests and ejections, and the request and continuation records completed
 * since the last report the scheduler accepted. Records survive a scheduler outage: they
 * are kept and sent again, up to `maxRecords` of each kind; the excess is only counted
 * (`droppedRecords`).
 */
import {
  DATA_PLANE_MAX_RECORDS,
  DATA_PLANE_REPORT_MS,
  DATA_PLANE_ROUTES,
  audienceOf,
  signWorkerRequest,
} from '@es/protocol';
import type { DataPlaneReport } from '@es/protocol';
import type { ContinuationRecord, ProxyRequestRecord } from '../options.js';

/** What a report says of the process itself (fixed for its life). */
export type DataPlaneIdentity = Pick<
  DataPlaneReport,
  'id' | 'host' | 'pid' | 'listen' | 'startedAt'
>;

/** What a report says of the moment it is sent. */
export type DataPlaneState = Pick<
  DataPlaneReport,
  'tableVersion' | 'tableAt' | 'subscribed' | 'inFlight' | 'ejected' | 'queued'
>;

/** Options of {@link createReportSender}. */
export interface ReportSenderOptions {
  /** `deriveKeys(secret).dataPlaneKey`. */
  key: string;
  /** The scheduler's control URL now (undefined: none known; the report waits). */
  controlUrl: () => Promise<string | undefined>;
  identity: () => DataPlaneIdentity;
  state: () => DataPlaneState;
  /** Default {@link DATA_PLANE_REPORT_MS}. */
  intervalMs?: number;
  /** Records of each kind kept at most. Default {@link DATA_PLANE_MAX_RECORDS}. */
  maxRecords?: number;
  /** Told of each report's fate, for logs and tests. */
  onResult?: (result: ReportResult) => void;
}

/** What became of one report. */
export type ReportResult =
  | { ok: true; seq: number; requests: number; continuations: number }
  | { ok: false; seq: number; message: string };

/** See {@link createReportSender}. */
export interface ReportSender {
  addRequest(record: ProxyRequestRecord): void;
  addContinuation(record: ContinuationRecord): void;
  /** Records waiting for an accepted report, and the ones dropped since the last. */
  readonly pending: { requests: number; continuations: number; dropped: number };
  /** Send one report now (waits for one already under way); true when accepted. */
  send(): Promise<boolean>;
  /** Stop the timer; with `finalReport`, send what is left once more. */
  close(finalReport?: boolean): Promise<void>;
}

/**
 * Report every `intervalMs`, one report at a time (the next waits for the last answer).
 * @example
 * const reports = createReportSender({ key, controlUrl, identity, state: () => ({ ... }) });
 * createProxyApp({ pool, onRequestComplete: reports.addRequest });
 */
export function createReportSender(options: ReportSenderOptions): ReportSender {
  const intervalMs = options.intervalMs ?? DATA_PLANE_REPORT_MS;
  const maxRecords = options.maxRecords ?? DATA_PLANE_MAX_RECORDS;
  const requests: DataPlaneReport['requests'] = [];
  const continuations: DataPlaneReport['continuations'] = [];
  let dropped = 0;
  let seq = 0;
  let closed = false;
  let sending: Promise<boolean> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const keep = <R>(list: R[], record: R) => {
    if (list.length < maxRecords) list.push(record);
    else dropped += 1;
  };

  const sendOnce = async (): Promise<boolean> => {
    const url = await options.controlUrl();
    seq += 1;
    const sentRequests = requests.length;
    const sentContinuations = continuations.length;
    const sentDropped = dropped;
    if (url === undefined) {
      options.onResult?.({ ok: false, seq, message: 'no control URL known' });
      return false;
    }
    const report: DataPlaneReport = {
      ...options.identity(),
      seq,
      ...options.state(),
      requests: requests.slice(0, sentRequests),
      continuations: continuations.slice(0, sentContinuations),
      droppedRecords: sentDropped,
    };
    const body = JSON.stringify(report);
    const { method, path } = DATA_PLANE_ROUTES.report;
    const headers = signWorkerRequest(options.key, {
      method,
      path,
      body,
      audience: audienceOf(url),
    });
    try {
      const res = await fetch(new URL(path, url), {
        method,
        headers: { ...headers, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(Math.max(2_000, 5 * intervalMs)),
      });
      await res.arrayBuffer();
      if (!res.ok) {
        options.onResult?.({ ok: false, seq, message: `answered ${res.status}` });
        return false;
      }
    } catch (error) {
      options.onResult?.({ ok: false, seq, message: (error as Error).message });
      return false;
    }
    // Accepted: what it carried is the scheduler's now; records added meanwhile stay.
    requests.splice(0, sentRequests);
    continuations.splice(0, sentContinuations);
    dropped -= sentDropped;
    options.onResult?.({
      ok: true,
      seq,
      requests: sentRequests,
      continuations: sentContinuations,
    });
    return true;
  };

  const send = (): Promise<boolean> => {
    const next = (sending ?? Promise.resolve(true)).then(sendOnce, sendOnce);
    sending = next;
    void next.finally(() => {
      if (sending === next) sending = undefined;
    });
    return next;
  };

  const tick = () => {
    timer = undefined;
    void send().finally(() => {
      if (!closed) timer = setTimeout(tick, intervalMs);
    });
  };
  timer = setTimeout(tick, intervalMs);

  return {
    addRequest: (record) => keep(requests, record as DataPlaneReport['requests'][number]),
    addContinuation: (record) =>
      keep(continuations, record as DataPlaneReport['continuations'][number]),
    get pending() {
      return { requests: requests.length, continuations: continuations.length, dropped };
    },
    send,
    async close(finalReport = false) {
      closed = true;
      clearTimeout(timer);
      if (finalReport) await send();
      else await sending;
    },
  };
}
