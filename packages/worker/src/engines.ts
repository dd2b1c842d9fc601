import { createRequire } from 'node:module';
import type { EngineKind, EngineLoad } from '@es/protocol';

/** Everything an engine adapter needs to build one instance's command line. */
export interface EngineSpec {
  engine: EngineKind;
  /** Model path or hub id. */
  model: string;
  /** Address the engine binds. */
  host: string;
  port: number;
  /** GPU ids of the instance's slice; becomes `CUDA_VISIBLE_DEVICES`. */
  gpus: readonly number[];
  tensorParallelSize: number;
  /** vLLM `--gpu-memory-utilization`, SGLang `--mem-fraction-static`. */
  gpuMemoryUtilization: number;
  /** vLLM `--max-model-len`, SGLang `--context-length`. */
  maxModelLen?: number | undefined;
  servedModelName?: string | undefined;
  /** The engine's `--api-key` (the proxy's key to it). */
  apiKey?: string | undefined;
  /**
   * Extra arguments appended verbatim (already split, see `splitArgs`), except
   * `--no-trust-remote-code`, which the vLLM and SGLang adapters read as
   * `trustRemoteCode: false` and do not pass on.
   */
  extraArgs?: readonly string[] | undefined;
  /**
   * vLLM and SGLang get `--trust-remote-code`, as the seed passed it: the model repository's
   * own Python code (custom architectures, tokenizers) runs on the node. Default true;
   * false, or `--no-trust-remote-code` among the extra arguments, leaves it out.
   */
  trustRemoteCode?: boolean | undefined;
  /**
   * The engine's version as its {@link EngineAdapter.versionCommand} printed it (`0.11.2`);
   * undefined when unknown. vLLM gets `--disable-log-requests` only when this says it
   * still accepts the flag (before 0.12).
   */
  engineVersion?: string | undefined;
  /**
   * Executable to run instead of the default (`vllm`, `python`, or Node for the mock).
   * For the mock engine this replaces the Node script, run with the current Node.
   */
  engineBin?: string | undefined;
}

/** A process to start: no shell is involved. */
export interface EngineCommand {
  command: string;
  args: string[];
  /** Variables to set on top of the worker's environment. */
  env: Record<string, string>;
}

/** Knows how to start one kind of engine and how to read its health and load. */
export interface EngineAdapter {
  kind: EngineKind;
  /** Pure: the command line for one instance. */
  command(spec: EngineSpec): EngineCommand;
  /**
   * Pure: the command printing the engine's version (`vllm --version`), when
   * {@link command} depends on it for this spec; undefined otherwise.
   */
  versionCommand?(spec: Pick<EngineSpec, 'engineBin' | 'extraArgs'>): EngineCommand | undefined;
  /** Path answering 200 once the engine serves requests. */
  readinessPath: string;
  /** Reads running / waiting / KV-cache use from the engine's Prometheus text. */
  parseLoad(metrics: string): EngineLoad;
}

function optional(flag: string, value: string | number | undefined): string[] {
  return value === undefined ? [] : [flag, String(value)];
}

function slice(spec: EngineSpec): Record<string, string> {
  return { CUDA_VISIBLE_DEVICES: spec.gpus.join(',') };
}

const NO_TRUST_REMOTE_CODE = '--no-trust-remote-code';

/** The extra arguments without the worker's own `--no-trust-remote-code`. */
function passedExtraArgs(spec: EngineSpec): string[] {
  return (spec.extraArgs ?? []).filter((arg) => arg !== NO_TRUST_REMOTE_CODE);
}

/** `--trust-remote-code` unless turned off, or already among the extra arguments. */
function trustRemoteCode(spec: EngineSpec): string[] {
  const extra = spec.extraArgs ?? [];
  if (spec.trustRemoteCode === false || extra.includes(NO_TRUST_REMOTE_CODE)) return [];
  return extra.includes('--trust-remote-code') ? [] : ['--trust-remote-code'];
}

/** Extra arguments that already decide vLLM's request logging. */
function decidesRequestLogging(spec: Pick<EngineSpec, 'extraArgs'>): boolean {
  return (spec.extraArgs ?? []).some(
    (arg) => arg === '--disable-log-requests' || arg === '--enable-log-requests',
  );
}

/**
 * Whether a vLLM of this version (as `vllm --version` prints it: `0.11.2`, `0.10.1.1`,
 * `0.12.0rc1.dev5+g1234`) accepts `--disable-log-requests`: before 0.12, which removed it
 * (request logging is off by default there; older versions log every request without it).
 * An unknown or unreadable version: false, since a removed flag stops the engine at start.
 * @example
 * vllmAcceptsDisableLogRequests('0.11.2'); // true
 * vllmAcceptsDisableLogRequests('0.12.0'); // false
 */
export function vllmAcceptsDisableLogRequests(version: string | undefined): boolean {
  const match = /^v?(\d+)\.(\d+)(?:\D|$)/.exec(version?.trim() ?? '');
  if (match === null) return false;
  return Number(match[1]) === 0 && Number(match[2]) < 12;
}

/**
 * The version in an engine's `--version` output: the last line that is one (`0.11.2`),
 * ignoring log lines around it; undefined when there is none.
 */
export function parseEngineVersion(output: string): string | undefined {
  let version: string | undefined;
  for (const line of output.split('\n')) {
    const match = /^\s*v?(\d+\.\d+[\w.+-]*)\s*$/.exec(line);
    if (match !== null) version = match[1];
  }
  return version;
}

/** vLLM: `vllm serve <model> --host --port --tensor-parallel-size --gpu-memory-utilization ...`. */
export const vllmAdapter: EngineAdapter = {
  kind: 'vllm',
  readinessPath: '/health',
  command: (spec) => ({
    command: spec.engineBin ?? 'vllm',
    args: [
      'serve',
      spec.model,
      '--host',
      spec.host,
      '--port',
      String(spec.port),
      '--tensor-parallel-size',
      String(spec.tensorParallelSize),
      '--gpu-memory-utilization',
      String(spec.gpuMemoryUtilization),
      ...optional('--max-model-len', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...optional('--api-key', spec.apiKey),
      ...trustRemoteCode(spec),
      // The seed passed it always; vLLM 0.12 removed it (and an unknown flag stops vLLM).
      ...(!decidesRequestLogging(spec) && vllmAcceptsDisableLogRequests(spec.engineVersion)
        ? ['--disable-log-requests']
        : []),
      ...passedExtraArgs(spec),
    ],
    env: slice(spec),
  }),
  versionCommand: (spec) =>
    decidesRequestLogging(spec)
      ? undefined
      : { command: spec.engineBin ?? 'vllm', args: ['--version'], env: {} },
  parseLoad: (text) => {
    const metrics = parsePrometheus(text);
    const kv = metrics.get('vllm:kv_cache_usage_perc') ?? metrics.get('vllm:gpu_cache_usage_perc');
    return {
      running: metrics.get('vllm:num_requests_running') ?? 0,
      waiting: metrics.get('vllm:num_requests_waiting') ?? 0,
      ...(kv === undefined ? {} : { kvCacheUsage: kv }),
    };
  },
};

/** SGLang: `python -m sglang.launch_server --model-path --host --port --tp-size ...`. */
export const sglangAdapter: EngineAdapter = {
  kind: 'sglang',
  readinessPath: '/health',
  command: (spec) => ({
    command: spec.engineBin ?? 'python',
    args: [
      '-m',
      'sglang.launch_server',
      '--model-path',
      spec.model,
      '--host',
      spec.host,
      '--port',
      String(spec.port),
      '--tp-size',
      String(spec.tensorParallelSize),
      '--mem-fraction-static',
      String(spec.gpuMemoryUtilization),
      ...optional('--context-length', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...optional('--api-key', spec.apiKey),
      ...trustRemoteCode(spec),
      // SGLang exports Prometheus metrics only when asked to.
      ...(spec.extraArgs?.includes('--enable-metrics') ? [] : ['--enable-metrics']),
      ...passedExtraArgs(spec),
    ],
    env: slice(spec),
  }),
  parseLoad: (text) => {
    const metrics = parsePrometheus(text);
    const kv = metrics.get('sglang:token_usage');
    return {
      running: metrics.get('sglang:num_running_reqs') ?? 0,
      waiting: metrics.get('sglang:num_queue_reqs') ?? 0,
      ...(kv === undefined ? {} : { kvCacheUsage: kv }),
    };
  },
};

/** Absolute path of `@es/mock-engine`'s built CLI (`dist/cli.mjs`). */
export function mockEngineCliPath(): string {
  const require = createRequire(import.meta.url);
  const manifest = require.resolve('@es/mock-engine/package.json');
  return manifest.replace(/package\.json$/, 'dist/cli.mjs');
}

/**
 * The project's mock engine (`es-mock-engine`), run with the worker's own Node. It speaks
 * vLLM's flags and metrics; `--tensor-parallel-size` and memory flags have no meaning there.
 */
export const mockAdapter: EngineAdapter = {
  kind: 'mock',
  readinessPath: '/health',
  command: (spec) => ({
    command: process.execPath,
    args: [
      spec.engineBin ?? mockEngineCliPath(),
      '--model',
      spec.model,
      '--host',
      spec.host,
      '--port',
      String(spec.port),
      ...optional('--max-model-len', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...optional('--api-key', spec.apiKey),
      ...passedExtraArgs(spec),
    ],
    env: slice(spec),
  }),
  parseLoad: (text) => vllmAdapter.parseLoad(text),
};

// Keyed by every kind of @es/protocol's ENGINE_KINDS: a kind added there without an adapter
// here does not compile.
const ADAPTERS: Readonly<Record<EngineKind, EngineAdapter>> = {
  vllm: vllmAdapter,
  sglang: sglangAdapter,
  mock: mockAdapter,
};

/** The adapter for an engine kind. */
export function engineAdapter(kind: EngineKind): EngineAdapter {
  return ADAPTERS[kind];
}

/**
 * Parses Prometheus text exposition into `name → value`, summing series of one name across
 * label sets (several models or ranks report one gauge each). Comments and bad lines are skipped.
 */
export function parsePrometheus(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const name = match[1] ?? '';
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    values.set(name, (values.get(name) ?? 0) + value);
  }
  return values;
}
