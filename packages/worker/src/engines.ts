import { createRequire } from 'node:module';
import type { EngineKind, EngineLoad } from '@es/protocol';
import type { EngineEndpoint } from './engine-front.js';
import { WorkerError } from './errors.js';

/** Everything an engine adapter needs to build one instance's command line. */
export interface EngineSpec {
  engine: EngineKind;
  /** Model path or hub id. */
  model: string;
  /**
   * Where the engine listens: a Unix socket in the worker's private directory, or (for an
   * engine that cannot, see {@link EngineAdapter.unixSocket}) a loopback port. Only the
   * worker's engine front is reachable from outside.
   */
  listen: EngineEndpoint;
  /** GPU ids of the instance's slice; becomes `CUDA_VISIBLE_DEVICES`. */
  gpus: readonly number[];
  tensorParallelSize: number;
  /** vLLM `--gpu-memory-utilization`, SGLang `--mem-fraction-static`. */
  gpuMemoryUtilization: number;
  /** vLLM `--max-model-len`, SGLang `--context-length`. */
  maxModelLen?: number | undefined;
  servedModelName?: string | undefined;
  /**
   * The key the engine requires (its job's engine key), passed in its environment, never
   * in its argv: `VLLM_API_KEY` for vLLM and the mock, a launcher variable for SGLang.
   */
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
  /**
   * Whether this engine (at this version, as its `versionCommand` printed it) can listen on
   * a Unix socket; if not, it listens on a loopback port behind the worker's front.
   */
  unixSocket(version: string | undefined): boolean;
  /** Path answering 200 once the engine serves requests. */
  readinessPath: string;
  /** Reads running / waiting / KV-cache use from the engine's Prometheus text. */
  parseLoad(metrics: string): EngineLoad;
}

/**
 * `--flag=value`: a value that starts with `-` stays a value (a model name `--engine-bin=x`
 * never becomes a flag); refused when it holds a line break or a NUL.
 */
function flag(name: string, value: string | number): string {
  const text = String(value);
  if (/[\0\r\n]/.test(text)) {
    throw new WorkerError(
      'invalid_option',
      `${name} must be one line, got ${JSON.stringify(text)}`,
      {
        param: name.replace(/^--/, ''),
      },
    );
  }
  return `${name}=${text}`;
}

function optional(name: string, value: string | number | undefined): string[] {
  return value === undefined ? [] : [flag(name, value)];
}

/** A model given as a positional argument must not look like a flag. */
function modelArgument(model: string): string {
  if (model.startsWith('-') || /[\0\r\n]/.test(model)) {
    throw new WorkerError(
      'invalid_option',
      `model ${JSON.stringify(model)} is not a model path or hub id (it starts with "-" or holds a line break)`,
      { param: 'model' },
    );
  }
  return model;
}

/** `--uds=<path>`, or `--host=<loopback> --port=<port>`. */
function listenArgs(spec: EngineSpec): string[] {
  if ('socketPath' in spec.listen) return [flag('--uds', spec.listen.socketPath)];
  return [flag('--host', spec.listen.host), flag('--port', spec.listen.port)];
}

/** The slice's GPUs and, when there is one, the key in vLLM's variable. */
function vllmEnv(spec: EngineSpec): Record<string, string> {
  return { ...slice(spec), ...(spec.apiKey === undefined ? {} : { VLLM_API_KEY: spec.apiKey }) };
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

/**
 * The first vLLM that listens on a Unix socket (`--uds`, vLLM pull request 18097, mid-2025):
 * older or unknown versions listen on a loopback port behind the worker's front.
 */
export const VLLM_UNIX_SOCKET_SINCE = '0.10.0';

/** Whether a vLLM of this version (`vllm --version`) takes `--uds`: 0.10.0 or later. */
export function vllmTakesUnixSocket(version: string | undefined): boolean {
  const match = /^v?(\d+)\.(\d+)(?:\D|$)/.exec(version?.trim() ?? '');
  if (match === null) return false;
  return Number(match[1]) > 0 || Number(match[2]) >= 10;
}

/** vLLM: `vllm serve <model> --uds=... --tensor-parallel-size=... --gpu-memory-utilization=...`. */
export const vllmAdapter: EngineAdapter = {
  kind: 'vllm',
  readinessPath: '/health',
  unixSocket: vllmTakesUnixSocket,
  command: (spec) => ({
    command: spec.engineBin ?? 'vllm',
    args: [
      'serve',
      modelArgument(spec.model),
      ...listenArgs(spec),
      flag('--tensor-parallel-size', spec.tensorParallelSize),
      flag('--gpu-memory-utilization', spec.gpuMemoryUtilization),
      ...optional('--max-model-len', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...trustRemoteCode(spec),
      // The seed passed it always; vLLM 0.12 removed it (and an unknown flag stops vLLM).
      ...(!decidesRequestLogging(spec) && vllmAcceptsDisableLogRequests(spec.engineVersion)
        ? ['--disable-log-requests']
        : []),
      ...passedExtraArgs(spec),
    ],
    env: vllmEnv(spec),
  }),
  // Always read: whether vLLM takes `--uds` depends on it.
  versionCommand: (spec) => ({ command: spec.engineBin ?? 'vllm', args: ['--version'], env: {} }),
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

/** The variable the SGLang launcher reads the engine key from (and removes). */
export const SGLANG_KEY_VARIABLE = 'ES_ENGINE_API_KEY';

/**
 * SGLang takes its key only as `--api-key`: this launcher, run as `python -c`, appends it to
 * `sys.argv` inside the interpreter (where `ps` cannot see it) and runs
 * `sglang.launch_server` as `python -m` would.
 */
export const SGLANG_LAUNCHER = [
  'import os, runpy, sys',
  `key = os.environ.pop(${JSON.stringify(SGLANG_KEY_VARIABLE)}, None)`,
  "sys.argv = ['sglang.launch_server'] + sys.argv[1:] + (['--api-key', key] if key else [])",
  "runpy.run_module('sglang.launch_server', run_name='__main__', alter_sys=True)",
].join('\n');

/**
 * SGLang: `python -c <launcher> --model-path=... --host=127.0.0.1 --port=... --tp-size=...`.
 * It cannot listen on a Unix socket: it binds loopback, behind the worker's front; its own
 * `/health` and `/metrics` need no key (SGLang leaves them open).
 */
export const sglangAdapter: EngineAdapter = {
  kind: 'sglang',
  readinessPath: '/health',
  unixSocket: () => false,
  command: (spec) => ({
    command: spec.engineBin ?? 'python',
    args: [
      '-c',
      SGLANG_LAUNCHER,
      flag('--model-path', spec.model),
      ...listenArgs(spec),
      flag('--tp-size', spec.tensorParallelSize),
      flag('--mem-fraction-static', spec.gpuMemoryUtilization),
      ...optional('--context-length', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...trustRemoteCode(spec),
      // SGLang exports Prometheus metrics only when asked to.
      ...(spec.extraArgs?.includes('--enable-metrics') ? [] : ['--enable-metrics']),
      ...passedExtraArgs(spec),
    ],
    env: {
      ...slice(spec),
      ...(spec.apiKey === undefined ? {} : { [SGLANG_KEY_VARIABLE]: spec.apiKey }),
    },
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
  unixSocket: () => true,
  command: (spec) => ({
    command: process.execPath,
    args: [
      spec.engineBin ?? mockEngineCliPath(),
      flag('--model', spec.model),
      ...listenArgs(spec),
      ...optional('--max-model-len', spec.maxModelLen),
      ...optional('--served-model-name', spec.servedModelName),
      ...passedExtraArgs(spec),
    ],
    env: vllmEnv(spec),
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
