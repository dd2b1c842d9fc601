/**
 * The data plane's side of the routing-table watch stream: subscribes to the scheduler
 * (`ROUTING_WATCH_ROUTE` of `@es/protocol`) and keeps a local `PoolView` from it. Static
 * stability: when the stream breaks, the last table keeps serving; the client re-reads the
 * scheduler-URL file, waits `backoffDelay`, resubscribes, and a fresh snapshot replaces the
 * table. Passive ejection (`reportOutcome`) stays in this process.
 */
import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';
import {
  ROUTING_WATCH_HEARTBEAT_MS,
  ROUTING_WATCH_ROUTE,
  WORKER_SIGNATURE_HEADERS,
  audienceOf,
  backoffDelay,
  createRoutingWatchVerifier,
  jobIdOfWorker,
  readSchedulerUrl,
  signWorkerRequest,
} from '@es/protocol';
import type {
  DataPlaneSettings,
  RoutingWatchDeployment,
  RoutingWatchEvent,
  RoutingWatchWorker,
} from '@es/protocol';
import { ROUTING_POLICIES } from '@es/pool';
import type {
  AttemptOutcome,
  DeploymentView,
  PoolView,
  RoutableWorker,
  RoutingChange,
  RoutingPolicy,
} from '@es/pool';

/** Options of {@link createRoutingWatchClient}. */
export interface RoutingWatchClientOptions {
  /** The file whose first line is the scheduler's URL (re-read before every subscription). */
  urlFile: string;
  /** The URL subscribed to while the file names none (`es-proxy --scheduler-url`). */
  url?: string;
  /** `deriveKeys(secret).dataPlaneKey`. */
  key: string;
  /** The engine key of a job (`(jobId) => deriveEngineKey(secret, jobId)`). */
  engineKey?: (jobId: string) => string | undefined;
  /** A deployment's own `upstreamApiKey`, from the configuration. */
  deploymentKey?: (deployment: string) => string | undefined;
  /** Backoff between subscriptions (default 250 ms doubling to 5000 ms, equal jitter). */
  retry?: { initialMs: number; maxMs: number };
  /** A stream silent this long is dropped and resubscribed (default 3 heartbeats). */
  silenceMs?: number;
  /** Consecutive failed attempts before a worker is ejected here (default 3). */
  ejectAfterFailures?: number;
  /** How long an ejected worker stays out of this process's routing (default 10000 ms). */
  ejectCooldownMs?: number;
  /** Told of each subscription's fate, for logs and tests. */
  onStatus?: (status: RoutingWatchStatus) => void;
}

/** What happened to a subscription. */
export type RoutingWatchStatus =
  | { kind: 'subscribed'; url: string; version: number }
  | { kind: 'refused'; url: string; code: string; message: string }
  | { kind: 'disconnected'; url: string | undefined; message: string };

/** A `PoolView` kept from the watch stream. */
export interface RoutingWatchClient extends PoolView {
  onRoutingChange(listener: (change: RoutingChange) => void): () => void;
  /** The table's version; undefined before the first snapshot. */
  readonly version: number | undefined;
  /** A stream is open and its snapshot was received. */
  readonly connected: boolean;
  /** The settings of the last snapshot; undefined before the first. */
  readonly settings: DataPlaneSettings | undefined;
  /** When the stream last sent a line (epoch ms; 0 before the first). */
  readonly lastEventAt: number;
  /** The workers of the table this process has ejected for now (passive ejection). */
  ejected(): string[];
  /** Attempts in flight through this process, per worker of the table (busy ones only). */
  inFlight(): Record<string, number>;
  /** Stops subscribing; the table stays as it is. */
  close(): void;
}

interface Ejection {
  failures: number;
  until: number;
}

/**
 * Subscribe to the scheduler's routing table.
 * @example
 * const pool = createRoutingWatchClient({ urlFile: workerUrlFilePath(logDir),
 *   key: deriveKeys(secret).dataPlaneKey, engineKey: (job) => deriveEngineKey(secret, job) });
 * createProxyApp({ pool, ... });
 */
export function createRoutingWatchClient(options: RoutingWatchClientOptions): RoutingWatchClient {
  const retry = options.retry ?? { initialMs: 250, maxMs: 5_000 };
  const silenceMs = options.silenceMs ?? 3 * ROUTING_WATCH_HEARTBEAT_MS;
  const ejectAfter = options.ejectAfterFailures ?? 3;
  const cooldownMs = options.ejectCooldownMs ?? 10_000;
  const deployments = new Map<string, DeploymentView>();
  let views: readonly DeploymentView[] = [];
  let modelIndex = new Map<string, DeploymentView>();
  /** Every worker of the table, by deployment then id. */
  const table = new Map<string, Map<string, RoutableWorker>>();
  /** What `routable` returns: the table minus the workers ejected here. */
  const published = new Map<string, readonly RoutableWorker[]>();
  const ejections = new Map<string, Ejection>();
  const waiters = new Map<string, Set<(ready: boolean) => void>>();
  const listeners = new Set<(change: RoutingChange) => void>();
  let version: number | undefined;
  let settings: DataPlaneSettings | undefined;
  let lastEventAt = 0;
  let connected = false;
  let closed = false;
  let attempt = 0;
  let current: { destroy(): void } | undefined;
  let timer: NodeJS.Timeout | undefined;

  const publish = (deployment: string) => {
    const at = Date.now();
    const list = [...(table.get(deployment)?.values() ?? [])].filter(
      (w) => (ejections.get(w.id)?.until ?? 0) <= at,
    );
    published.set(deployment, list);
    if (list.length > 0) for (const resolve of waiters.get(deployment) ?? []) resolve(true);
  };
  const notify = (change: RoutingChange) => {
    for (const listener of listeners) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own.
      }
    }
  };
  const toView = (d: RoutingWatchDeployment): DeploymentView => {
    const routing = (ROUTING_POLICIES as readonly string[]).includes(d.routing)
      ? (d.routing as RoutingPolicy)
      : ROUTING_POLICIES[0];
    const upstreamApiKey = options.deploymentKey?.(d.name);
    return {
      ...d,
      routing,
      ...(upstreamApiKey === undefined ? {} : { upstreamApiKey }),
    };
  };
  const rebuildDeployments = () => {
    views = [...deployments.values()];
    modelIndex = new Map();
    for (const d of views) for (const name of d.modelNames) modelIndex.set(name, d);
  };
  const toWorker = (w: RoutingWatchWorker): RoutableWorker => {
    const upstreamKey = w.key === 'job' ? options.engineKey?.(jobIdOfWorker(w.id)) : undefined;
    return {
      id: w.id,
      deployment: w.deployment,
      baseUrl: w.baseUrl,
      ...(upstreamKey === undefined ? {} : { upstreamKey }),
      inFlight: 0,
    };
  };
  const addWorker = (w: RoutingWatchWorker, reason: string) => {
    const workers = table.get(w.deployment) ?? new Map<string, RoutableWorker>();
    table.set(w.deployment, workers);
    const existing = workers.get(w.id);
    // The same worker at the same address keeps its in-flight count.
    if (existing?.baseUrl === w.baseUrl) return;
    workers.set(w.id, toWorker(w));
    publish(w.deployment);
    notify({ deployment: w.deployment, workerId: w.id, routable: true, reason });
  };
  const removeWorker = (deployment: string, workerId: string, reason: string) => {
    if (table.get(deployment)?.delete(workerId) !== true) return;
    ejections.delete(workerId);
    publish(deployment);
    notify({ deployment, workerId, routable: false, reason });
  };

  const apply = (event: RoutingWatchEvent) => {
    switch (event.type) {
      case 'snapshot': {
        settings = event.dataPlane;
        deployments.clear();
        for (const d of event.deployments) deployments.set(d.name, toView(d));
        rebuildDeployments();
        const fresh = new Set(event.workers.map((w) => w.id));
        for (const [deployment, workers] of table) {
          for (const id of [...workers.keys()]) {
            if (!fresh.has(id)) removeWorker(deployment, id, 'absent from a new snapshot');
          }
        }
        for (const w of event.workers) addWorker(w, 'snapshot');
        break;
      }
      case 'worker-routable':
        addWorker(event.worker, event.reason);
        break;
      case 'worker-unroutable':
        removeWorker(event.deployment, event.workerId, event.reason);
        break;
      case 'deployment-added':
        deployments.set(event.deployment.name, toView(event.deployment));
        rebuildDeployments();
        break;
      case 'deployment-removed':
        deployments.delete(event.name);
        rebuildDeployments();
        for (const id of [...(table.get(event.name)?.keys() ?? [])]) {
          removeWorker(event.name, id, 'deployment removed');
        }
        break;
      case 'heartbeat':
        break;
    }
    lastEventAt = Date.now();
    version = event.version;
  };

  const schedule = () => {
    if (closed) return;
    attempt += 1;
    const delay = backoffDelay(attempt, { ...retry, jitter: 'equal' });
    timer = setTimeout(() => void subscribe(), delay);
  };

  const subscribe = async () => {
    timer = undefined;
    if (closed) return;
    const read = await readSchedulerUrl(options.urlFile);
    if (closed) return;
    const url = read.kind === 'url' ? read.url : options.url;
    if (url === undefined) {
      options.onStatus?.({
        kind: 'disconnected',
        url: undefined,
        message: `no URL in ${options.urlFile}`,
      });
      schedule();
      return;
    }
    const path = ROUTING_WATCH_ROUTE.path;
    const headers = signWorkerRequest(options.key, {
      method: 'GET',
      path,
      body: '',
      audience: audienceOf(url),
    });
    const nonce = headers[WORKER_SIGNATURE_HEADERS.nonce]!;
    const verifier = createRoutingWatchVerifier(options.key, nonce);
    let ended = false;
    let silence: NodeJS.Timeout | undefined;
    const end = (status: RoutingWatchStatus) => {
      if (ended) return;
      ended = true;
      clearTimeout(silence);
      connected = false;
      current = undefined;
      req.destroy();
      options.onStatus?.(status);
      schedule();
    };
    const armSilence = () => {
      clearTimeout(silence);
      silence = setTimeout(
        () => end({ kind: 'disconnected', url, message: `no line for ${silenceMs} ms` }),
        silenceMs,
      );
    };
    const req = request(new URL(path, url), { method: 'GET', headers });
    current = { destroy: () => req.destroy() };
    armSilence();
    req.on('error', (error) => end({ kind: 'disconnected', url, message: error.message }));
    req.on('response', (res: IncomingMessage) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (chunk: string) => (body += chunk.slice(0, 4096)));
        res.on('end', () =>
          end({
            kind: 'refused',
            url,
            code: `http_${res.statusCode}`,
            message: body.slice(0, 500),
          }),
        );
        return;
      }
      let pending = '';
      res.on('data', (chunk: string) => {
        pending += chunk;
        let newline: number;
        while (!ended && (newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          const check = verifier.check(line);
          if (!check.ok) {
            end({ kind: 'refused', url, code: check.code, message: check.message });
            return;
          }
          if (version === undefined && check.event.type !== 'snapshot') continue;
          armSilence();
          apply(check.event);
          if (check.event.type === 'snapshot') {
            connected = true;
            attempt = 0;
            options.onStatus?.({ kind: 'subscribed', url, version: check.event.version });
          }
        }
        if (pending.length > 16 * 1024 * 1024) {
          end({ kind: 'refused', url, code: 'invalid_event', message: 'a line over 16 MiB' });
        }
      });
      res.on('end', () => end({ kind: 'disconnected', url, message: 'the stream ended' }));
      res.on('error', (error) => end({ kind: 'disconnected', url, message: error.message }));
    });
    req.end();
  };

  void subscribe();

  return {
    get version() {
      return version;
    },
    get connected() {
      return connected;
    },
    get settings() {
      return settings;
    },
    get lastEventAt() {
      return lastEventAt;
    },
    ejected() {
      const at = Date.now();
      return [...ejections].filter(([, e]) => e.until > at).map(([id]) => id);
    },
    inFlight() {
      const counts: Record<string, number> = {};
      for (const workers of table.values()) {
        for (const w of workers.values()) if (w.inFlight > 0) counts[w.id] = w.inFlight;
      }
      return counts;
    },
    deployments: () => views,
    resolveModel: (model) => modelIndex.get(model),
    routable: (deployment) => published.get(deployment) ?? [],
    waitForRoutable(deployment, signal) {
      if ((published.get(deployment)?.length ?? 0) > 0) return Promise.resolve(true);
      if (signal.aborted) return Promise.resolve(false);
      return new Promise((resolve) => {
        const set = waiters.get(deployment) ?? new Set();
        waiters.set(deployment, set);
        const settle = (ready: boolean) => {
          set.delete(settle);
          signal.removeEventListener('abort', onAbort);
          resolve(ready);
        };
        const onAbort = () => settle(false);
        set.add(settle);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    },
    reportOutcome(workerId: string, outcome: AttemptOutcome) {
      const worker = [...table.values()].map((m) => m.get(workerId)).find((w) => w !== undefined);
      if (worker === undefined) return;
      if (outcome === 'draining') {
        // Its front says it drains: out of this table until the control plane sends it as
        // routable again (a `worker-routable` event or a snapshot that lists it).
        removeWorker(
          worker.deployment,
          workerId,
          'draining: its engine front refuses new requests',
        );
        return;
      }
      const ejection = ejections.get(workerId) ?? { failures: 0, until: 0 };
      ejections.set(workerId, ejection);
      if (outcome === 'success') {
        ejection.failures = 0;
        return;
      }
      ejection.failures += 1;
      if (ejection.failures < ejectAfter) return;
      ejection.failures = 0;
      ejection.until = Date.now() + cooldownMs;
      publish(worker.deployment);
      notify({
        deployment: worker.deployment,
        workerId,
        routable: false,
        reason: `unready: ejected for ${cooldownMs} ms in this process`,
      });
      setTimeout(() => {
        if (table.get(worker.deployment)?.get(workerId) === undefined) return;
        publish(worker.deployment);
        notify({
          deployment: worker.deployment,
          workerId,
          routable: true,
          reason: 'ejection over',
        });
      }, cooldownMs).unref();
    },
    onRoutingChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      clearTimeout(timer);
      current?.destroy();
      for (const set of waiters.values()) for (const resolve of [...set]) resolve(false);
    },
  };
}
