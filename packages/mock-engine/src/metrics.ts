/** Counters and gauges of one mock engine, as returned by `engine.stats()`. */
export interface MockEngineStats {
  /** Requests received, by path (every route, `/health` and `/metrics` included). */
  requests: Record<string, number>;
  /** Inference requests answered in full. */
  completed: number;
  /** Inference requests whose client disconnected before the answer was complete. */
  aborted: number;
  /** Inference requests answered with an injected 500 (`failRate`). */
  failed: number;
  /** Streams the engine cut on purpose (`dieMidStream`). */
  killed: number;
  /** Requests being generated now. */
  running: number;
  /** Requests queued behind `maxNumSeqs`. */
  waiting: number;
  /** Simulated KV-cache usage in [0, 1]. */
  kvCacheUsage: number;
  promptTokens: number;
  generationTokens: number;
}

function line(name: string, help: string, type: 'gauge' | 'counter', samples: string[]): string {
  return `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${samples.join('\n')}\n`;
}

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"');

/** Render the stats in Prometheus text format with vLLM's metric names. */
export function renderMetrics(stats: MockEngineStats, modelName: string): string {
  const m = `model_name="${escapeLabel(modelName)}"`;
  const gauge = (name: string, help: string, value: number) =>
    line(name, help, 'gauge', [`${name}{${m}} ${value}`]);
  const counter = (name: string, help: string, value: number) =>
    line(name, help, 'counter', [`${name}{${m}} ${value}`]);
  const routes = Object.entries(stats.requests).map(
    ([route, n]) => `mock:requests_total{route="${escapeLabel(route)}"} ${n}`,
  );
  return [
    gauge(
      'vllm:num_requests_running',
      'Number of requests in model execution batches.',
      stats.running,
    ),
    gauge(
      'vllm:num_requests_waiting',
      'Number of requests waiting to be processed.',
      stats.waiting,
    ),
    gauge(
      'vllm:gpu_cache_usage_perc',
      'GPU KV-cache usage. 1 means 100 percent usage.',
      stats.kvCacheUsage,
    ),
    gauge(
      'vllm:kv_cache_usage_perc',
      'KV-cache usage. 1 means 100 percent usage.',
      stats.kvCacheUsage,
    ),
    counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.', stats.promptTokens),
    counter(
      'vllm:generation_tokens_total',
      'Number of generation tokens processed.',
      stats.generationTokens,
    ),
    line('mock:requests_total', 'Requests received, by route.', 'counter', routes),
    line('mock:requests_completed_total', 'Inference requests answered in full.', 'counter', [
      `mock:requests_completed_total ${stats.completed}`,
    ]),
    line(
      'mock:requests_aborted_total',
      'Inference requests whose client disconnected first.',
      'counter',
      [`mock:requests_aborted_total ${stats.aborted}`],
    ),
    line('mock:requests_failed_total', 'Injected failures (fail-rate).', 'counter', [
      `mock:requests_failed_total ${stats.failed}`,
    ]),
    line('mock:streams_killed_total', 'Streams cut on purpose (die-mid-stream).', 'counter', [
      `mock:streams_killed_total ${stats.killed}`,
    ]),
  ].join('');
}
