import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PoolEvent } from '@es/pool';
import type { ContinuationRecord, ProxyRequestRecord } from '@es/proxy';
import type { SeriesResponse, SeriesSample, StatusResponse } from '@es/client';

/** Outcome of one provider call: `ok` or the failure class of `classifyProviderError`. */
export type ProviderCallOutcome = 'ok' | 'transient' | 'policy' | 'permanent';

/** The provider operations (sbatch, squeue, scancel on SLURM). */
export type ProviderOperation = 'submit' | 'list' | 'cancel' | 'release';

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Length of one traffic sample for `/api/v1/admin/series` (default 10 000 ms). */
  sampleIntervalMs?: number;
  /** Samples kept (default 360: one hour of 10-second samples). */
  samples?: number;
  /** Also export Node's default metrics, event-loop delay included (default true). */
  defaultMetrics?: boolean;
  /** Clock (default `Date.now`). */
  now?: () => number;
}

/** The scheduler's Prometheus metrics and the traffic series behind the dashboard charts. */
export interface Metrics {
  /** The prom-client registry (its own, never the global one). */
  readonly registry: Registry;
  /** Feed one finished proxied request (the proxy's `onRequestComplete`). */
  observeRequest(record: ProxyRequestRecord): void;
  /**
   * Requests that ended in an error (a 5xx or a stream cut with an error event) whose last
   * attempt was on this worker: the per-worker figure next to its `requestsServed`.
   */
  requestErrors(workerId: string): number;
  /** Feed one continuation decision (the proxy's `onContinuation`). */
  observeContinuation(record: ContinuationRecord): void;
  /** Feed one lifecycle event (the pool registry's `on`). */
  observeEvent(event: PoolEvent): void;
  /** Feed one provider call (sbatch/squeue/scancel) and how it ended. */
  observeProviderCall(
    provider: string,
    operation: ProviderOperation,
    outcome: ProviderCallOutcome,
  ): void;
  /** Where the gauges (workers, jobs, in-flight, queued) are read from at scrape time. */
  setStatusSource(source: () => StatusResponse | undefined): void;
  /** The Prometheus text exposition. */
  render(): Promise<string>;
  /** The per-interval traffic samples, oldest first. */
  series(): SeriesResponse;
  /** Stop the sampling timer. */
  close(): void;
}

const LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TTFB_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SPLICE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Workers whose error count is kept (the oldest go first, like the status view's jobs). */
const WORKERS_KEPT = 2_000;

/**
 * The `status` label of `es_requests_total`: the status the client saw, except for a stream
 * the proxy cut with an error event, whose status stays the upstream's 200.
 */
function statusLabel(record: ProxyRequestRecord): string {
  return record.outcome === 'mid-stream-failure' ? 'stream_error' : String(record.status);
}

/**
 * An error of the service: a 5xx, or a stream cut mid-way. A client's own 4xx is not, nor a
 * client that went away (499): it chose to.
 */
function endedInError(record: ProxyRequestRecord): boolean {
  return record.outcome === 'mid-stream-failure' || record.status >= 500;
}

/**
 * Whether the latency is how long a whole answer took. A cut stream stopped at its error
 * event and an abandoned request when the client left: as durations they would read as
 * fast answers.
 */
function answeredInFull(record: ProxyRequestRecord): boolean {
  return record.outcome !== 'mid-stream-failure' && record.outcome !== 'client-abort';
}

function route(path: string): string {
  // Bounded label values: the OpenAI routes by name, anything else as "other".
  const known = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/responses'];
  return known.includes(path) ? path : 'other';
}

/**
 * Create the metrics: request counters and histograms, tokens, pool and SLURM gauges,
 * preemptions, replacements, retries, passive ejections, provider calls, event-loop delay.
 * @example
 * const metrics = createMetrics();
 * const proxy = createProxyApp({ pool: registry, onRequestComplete: metrics.observeRequest });
 * registry.on(metrics.observeEvent);
 * app.get('/metrics', async (c) => c.text(await metrics.render()));
 */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const now = options.now ?? Date.now;
  const intervalMs = options.sampleIntervalMs ?? 10_000;
  const keep = options.samples ?? 360;
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'es_' });
  let source: () => StatusResponse | undefined = () => undefined;

  const registers = [registry];
  const requests = new Counter({
    name: 'es_requests_total',
    help: 'Proxied requests by deployment, HTTP status (stream_error: cut with an error event) and route',
    labelNames: ['deployment', 'status', 'route'] as const,
    registers,
  });
  const latency = new Histogram({
    name: 'es_request_duration_seconds',
    help: 'Time from a request arriving to its last byte sent (not for cut streams or client aborts)',
    labelNames: ['deployment', 'route'] as const,
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const ttfb = new Histogram({
    name: 'es_time_to_first_byte_seconds',
    help: 'Time from a request arriving to its first response byte',
    labelNames: ['deployment', 'route'] as const,
    buckets: TTFB_BUCKETS,
    registers,
  });
  const tokens = new Counter({
    name: 'es_tokens_total',
    help: 'Tokens from the responses usage, by direction (in = prompt, out = completion)',
    labelNames: ['deployment', 'direction'] as const,
    registers,
  });
  const retries = new Counter({
    name: 'es_retries_total',
    help: 'Upstream attempts beyond the first',
    labelNames: ['deployment'] as const,
    registers,
  });
  const continuations = new Counter({
    name: 'es_continuations_total',
    help:
      'Generations cut after their first byte, by outcome (continued on another worker, inexact, ' +
      'refused, failed) and reason',
    labelNames: ['deployment', 'outcome', 'reason'] as const,
    registers,
  });
  const spliceWait = new Histogram({
    name: 'es_continuation_wait_seconds',
    help: "Time a client waited at a splice: from the cut to the continuation's first token",
    labelNames: ['deployment'] as const,
    buckets: SPLICE_BUCKETS,
    registers,
  });
  const events = new Counter({
    name: 'es_pool_events_total',
    help: 'Lifecycle events by type (submitted, running, ready, draining, preempted ...)',
    labelNames: ['deployment', 'type'] as const,
    registers,
  });
  const preemptions = new Counter({
    name: 'es_preemptions_total',
    help: 'Node jobs preempted',
    labelNames: ['deployment'] as const,
    registers,
  });
  const replacements = new Counter({
    name: 'es_replacements_total',
    help: 'Node jobs replaced by a new submission',
    labelNames: ['deployment'] as const,
    registers,
  });
  const ejections = new Counter({
    name: 'es_passive_ejections_total',
    help: 'Workers ejected from routing after repeated upstream failures',
    labelNames: ['deployment'] as const,
    registers,
  });
  const providerCalls = new Counter({
    name: 'es_provider_calls_total',
    help: 'Cluster calls (submit = sbatch, list = squeue, cancel = scancel) by outcome',
    labelNames: ['provider', 'operation', 'outcome'] as const,
    registers,
  });
  // Gauges read the status at scrape time, so they can never drift from the read model.
  new Gauge({
    name: 'es_workers',
    help: 'Engine instances by state',
    labelNames: ['deployment', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const d of source()?.deployments ?? []) {
        const counts = new Map<string, number>();
        for (const w of d.workers) counts.set(w.state, (counts.get(w.state) ?? 0) + 1);
        for (const state of ['starting', 'loading', 'ready', 'draining', 'failed', 'gone']) {
          this.set({ deployment: d.name, state }, counts.get(state) ?? 0);
        }
      }
    },
  });
  new Gauge({
    name: 'es_jobs',
    help: 'Node jobs (SLURM or local) by state',
    labelNames: ['deployment', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const d of source()?.deployments ?? []) {
        const counts = new Map<string, number>();
        for (const j of d.jobs) counts.set(j.state, (counts.get(j.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ deployment: d.name, state }, n);
      }
    },
  });
  new Gauge({
    name: 'es_requests_in_flight',
    help: 'Requests the proxy has open on workers',
    labelNames: ['deployment'] as const,
    registers,
    collect() {
      this.reset();
      for (const d of source()?.deployments ?? []) {
        this.set(
          { deployment: d.name },
          d.workers.reduce((sum, w) => sum + (w.state === 'gone' ? 0 : w.inFlight), 0),
        );
      }
    },
  });
  new Gauge({
    name: 'es_requests_queued',
    help: 'Requests waiting for capacity in the proxy',
    labelNames: ['deployment'] as const,
    registers,
    collect() {
      this.reset();
      for (const d of source()?.deployments ?? []) this.set({ deployment: d.name }, d.queued);
    },
  });
  new Gauge({
    name: 'es_max_nodes',
    help: 'Configured maximum node jobs',
    labelNames: ['deployment'] as const,
    registers,
    collect() {
      this.reset();
      for (const d of source()?.deployments ?? []) this.set({ deployment: d.name }, d.maxNodes);
    },
  });
  // Demand-aware scaling, per deployment: the target (maxNodes for one that does not scale),
  // and for one that scales the mean load over its window and the nodes that load needs.
  const scalingGauges: [
    string,
    string,
    (d: StatusResponse['deployments'][number]) => number | undefined,
  ][] = [
    [
      'es_target_nodes',
      'Node jobs the deployment should hold now: its demand-aware target, or maxNodes when it does not scale',
      (d) => d.scaling?.target ?? d.maxNodes,
    ],
    [
      'es_scaling_load',
      'Mean load over the scaling window (requests in flight and queued) of a deployment that scales with demand',
      (d) => d.scaling?.load,
    ],
    [
      'es_scaling_need',
      'Node jobs the mean load needs (before the up and down delays) of a deployment that scales with demand',
      (d) => d.scaling?.need,
    ],
  ];
  for (const [name, help, value] of scalingGauges) {
    new Gauge({
      name,
      help,
      labelNames: ['deployment'] as const,
      registers,
      collect() {
        this.reset();
        for (const d of source()?.deployments ?? []) {
          const v = value(d);
          if (v !== undefined) this.set({ deployment: d.name }, v);
        }
      },
    });
  }

  // The traffic series: one open bucket, closed every interval into a bounded ring.
  interface Bucket {
    requests: number;
    errors: number;
    tokens: number;
    ttfbSum: number;
    ttfbCount: number;
  }
  const empty = (): Bucket => ({ requests: 0, errors: 0, tokens: 0, ttfbSum: 0, ttfbCount: 0 });
  let bucket = empty();
  const samples: SeriesSample[] = [];
  const roll = () => {
    const seconds = intervalMs / 1000;
    const sample: SeriesSample = {
      at: now(),
      requestsPerSecond: bucket.requests / seconds,
      tokensPerSecond: bucket.tokens / seconds,
      errorsPerSecond: bucket.errors / seconds,
    };
    if (bucket.ttfbCount > 0) sample.ttfbMs = bucket.ttfbSum / bucket.ttfbCount;
    samples.push(sample);
    if (samples.length > keep) samples.shift();
    bucket = empty();
  };
  const timer = setInterval(roll, intervalMs);
  timer.unref();
  const workerErrors = new Map<string, number>();

  return {
    registry,
    observeRequest(record) {
      const deployment = record.deployment ?? 'none';
      const r = route(record.path);
      requests.inc({ deployment, status: statusLabel(record), route: r });
      if (answeredInFull(record)) {
        latency.observe({ deployment, route: r }, record.latencyMs / 1000);
      }
      // The first byte of a stream cut later was still sent at ttfbMs: a true observation.
      if (record.ttfbMs !== undefined) ttfb.observe({ deployment, route: r }, record.ttfbMs / 1000);
      if (record.promptTokens) tokens.inc({ deployment, direction: 'in' }, record.promptTokens);
      if (record.completionTokens) {
        tokens.inc({ deployment, direction: 'out' }, record.completionTokens);
      }
      if (record.retries > 0) retries.inc({ deployment }, record.retries);
      bucket.requests += 1;
      const error = endedInError(record);
      if (error) bucket.errors += 1;
      if (error && record.workerId !== undefined) {
        workerErrors.set(record.workerId, (workerErrors.get(record.workerId) ?? 0) + 1);
        if (workerErrors.size > WORKERS_KEPT) {
          workerErrors.delete(workerErrors.keys().next().value as string);
        }
      }
      bucket.tokens += record.completionTokens ?? 0;
      if (record.ttfbMs !== undefined) {
        bucket.ttfbSum += record.ttfbMs;
        bucket.ttfbCount += 1;
      }
    },
    requestErrors: (workerId) => workerErrors.get(workerId) ?? 0,
    observeContinuation(record) {
      const { deployment, outcome, reason } = record;
      continuations.inc({ deployment, outcome, reason });
      if (record.waitMs !== undefined) spliceWait.observe({ deployment }, record.waitMs / 1000);
    },
    observeEvent(event) {
      events.inc({ deployment: event.deployment, type: event.type });
      if (event.type === 'preempted') preemptions.inc({ deployment: event.deployment });
      if (event.type === 'replaced') replacements.inc({ deployment: event.deployment });
      if (event.type === 'unready' && event.reason?.startsWith('ejected')) {
        ejections.inc({ deployment: event.deployment });
      }
    },
    observeProviderCall(provider, operation, outcome) {
      providerCalls.inc({ provider, operation, outcome });
    },
    setStatusSource(next) {
      source = next;
    },
    render: () => registry.metrics(),
    series: () => ({ intervalMs, samples: [...samples] }),
    close() {
      clearInterval(timer);
    },
  };
}
