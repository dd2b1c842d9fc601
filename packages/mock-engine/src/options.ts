import { readFileSync } from 'node:fs';
import { MockEngineError } from './errors.js';
import { resolveOutputFormat } from './output-format.js';
import type { OutputFormat } from './output-format.js';

/** One rule of a response script: the first rule whose `match` matches the prompt wins. */
export interface ScriptRule {
  /** Regular expression (JavaScript syntax) tested against the prompt; absent = match all. */
  match?: string;
  /** Text the engine answers with. */
  response: string;
  /** Finish reason reported when the response is sent in full (default `stop`). */
  finishReason?: 'stop' | 'length';
}

/** Options of {@link createMockEngine}; every field mirrors a CLI flag. */
export interface MockEngineOptions {
  /** Model path or hub id, as given to `vllm serve <model>` (default `mock-model`). */
  model?: string;
  /** Names the model is served under (default: the model). The first one is reported in responses' `root`. */
  servedModelName?: string | string[];
  /** When set, `/v1/*` requires `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
  /** Milliseconds `listen()` waits before opening the port, like vLLM loading weights. */
  loadDelay?: number;
  /** Generation speed; 0 = as fast as possible (default 100). */
  tokensPerSecond?: number;
  /** Milliseconds before the first token (default 20). */
  ttft?: number;
  /** `max_tokens` when a request gives none (default 32). */
  maxTokensDefault?: number;
  /** Context length reported in `/v1/models` (default 4096). */
  maxModelLen?: number;
  /** Requests generated at once; more wait in a queue (0 = unlimited, the default). */
  maxNumSeqs?: number;
  /** Tokens the simulated KV cache holds; drives the KV-cache usage gauges (default 65536). */
  kvCacheTokens?: number;
  /** Dimensions of `/v1/embeddings` vectors (default 384). */
  embeddingDims?: number;
  /** After this many inference requests have been answered, the engine crashes. */
  crashAfter?: number;
  /** Accept connections but never answer anything (a hung engine). */
  hang?: boolean;
  /** Destroy the connection of a streaming response after this many content chunks. */
  dieMidStream?: number;
  /**
   * Die after this many content chunks of a stream are flushed: the CLI SIGKILLs its own
   * process (a crashed engine), the library calls {@link MockEngineOptions.onKill}.
   */
  killMidStream?: number;
  /** What `killMidStream` does (library default: close every connection and the port). */
  onKill?: () => void;
  /**
   * Test-only fault: every stream silently leaves out its Nth content chunk (1-based); the
   * rest of the stream, `finish_reason` and `[DONE]` are unchanged. A content check must catch it.
   */
  dropChunk?: number;
  /** Fraction in [0, 1] of inference requests answered with a 500 error. */
  failRate?: number;
  /** Seed of the pseudo-random generator behind `failRate` (default 0: runs are reproducible). */
  seed?: number;
  /**
   * Directory of the request log: each engine process appends one JSON line per inference
   * request to `<dir>/requests-<pid>.jsonl` (see `MockEngine.requestLog`).
   */
  requestLogDir?: string;
  /** Scripted answers; without a script the engine generates deterministic text. */
  script?: ScriptRule[];
  /**
   * Write chat answers as a reasoning / tool-calling model served with vLLM's parsers, and
   * parse them as vLLM does (the CLI's `--reasoning-parser`, `--tool-call-parser` with
   * `--enable-auto-tool-choice`, or a gpt-oss `--model`): `'harmony'`, or
   * `{ reasoning?: 'think', tools?: 'hermes' }`. Default: plain text.
   */
  outputFormat?: OutputFormat;
  /**
   * Give the tokenizer byte-pair merges (default false): prompts, `/tokenize` and
   * `continue_final_message` text are encoded with them, while generation still emits the
   * unmerged ids one by one, so text re-encodes to other (fewer) ids than were generated, as
   * with a real BPE tokenizer. Token-id prompts are used as they are.
   */
  merges?: boolean;
  /**
   * Called when `crashAfter` is reached. The CLI exits the process with code 3; the library
   * default destroys every connection and closes the server, like a dead process would.
   */
  onCrash?: () => void;
}

/** Options with defaults applied and values checked. */
export interface ResolvedOptions {
  model: string;
  servedModelNames: string[];
  apiKey: string | undefined;
  loadDelay: number;
  tokensPerSecond: number;
  ttft: number;
  maxTokensDefault: number;
  maxModelLen: number;
  maxNumSeqs: number;
  kvCacheTokens: number;
  embeddingDims: number;
  crashAfter: number | undefined;
  hang: boolean;
  dieMidStream: number | undefined;
  killMidStream: number | undefined;
  dropChunk: number | undefined;
  failRate: number;
  seed: number;
  requestLogDir: string | undefined;
  /** A checked copy of the script (compiled on use, see `expectedGeneration`). */
  script: readonly ScriptRule[];
  /** The checked output format; undefined: plain text. */
  outputFormat: OutputFormat | undefined;
  /** Whether the tokenizer merges (see `MockEngineOptions.merges`). */
  merges: boolean;
}

/** A script rule with its regular expression compiled. */
export interface CompiledRule {
  match: RegExp | undefined;
  response: string;
  finishReason: 'stop' | 'length';
}

function checkNumber(
  name: string,
  value: number | undefined,
  fallback: number,
  { min = 0, max = Number.POSITIVE_INFINITY, integer = false } = {},
): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    const kind = integer ? 'an integer' : 'a number';
    const range = max === Number.POSITIVE_INFINITY ? `>= ${min}` : `between ${min} and ${max}`;
    throw new MockEngineError(
      'invalid_option',
      `${name} must be ${kind} ${range}, got ${String(value)}`,
    );
  }
  return v;
}

/** Check a parsed script and compile its regular expressions. */
export function compileScript(rules: unknown, source = 'script'): CompiledRule[] {
  if (!Array.isArray(rules)) {
    throw new MockEngineError(
      'invalid_script',
      `${source}: expected a JSON array of {"match"?, "response", "finishReason"?} rules`,
    );
  }
  return rules.map((rule: unknown, i) => {
    const where = `${source}: rule ${i}`;
    if (typeof rule !== 'object' || rule === null) {
      throw new MockEngineError('invalid_script', `${where} must be an object`);
    }
    const { match, response, finishReason } = rule as Record<string, unknown>;
    if (typeof response !== 'string') {
      throw new MockEngineError('invalid_script', `${where}: "response" must be a string`);
    }
    if (match !== undefined && typeof match !== 'string') {
      throw new MockEngineError('invalid_script', `${where}: "match" must be a string (a regex)`);
    }
    if (finishReason !== undefined && finishReason !== 'stop' && finishReason !== 'length') {
      throw new MockEngineError(
        'invalid_script',
        `${where}: "finishReason" must be "stop" or "length"`,
      );
    }
    let regex: RegExp | undefined;
    try {
      regex = match === undefined ? undefined : new RegExp(match);
    } catch (cause) {
      throw new MockEngineError('invalid_script', `${where}: "match" is not a valid regex`, {
        cause,
      });
    }
    return { match: regex, response, finishReason: finishReason ?? 'stop' };
  });
}

/**
 * Read a `--script` JSON file.
 * @example
 * createMockEngine({ script: loadScript('answers.json') });
 */
export function loadScript(file: string): ScriptRule[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (cause) {
    throw new MockEngineError('invalid_script', `cannot read script ${file}: ${String(cause)}`, {
      cause,
    });
  }
  compileScript(parsed, file);
  return parsed as ScriptRule[];
}

/** Apply defaults and validate; throws {@link MockEngineError} naming the bad option. */
export function resolveOptions(options: MockEngineOptions): ResolvedOptions {
  const model = options.model ?? 'mock-model';
  const served =
    options.servedModelName === undefined
      ? [model]
      : Array.isArray(options.servedModelName)
        ? options.servedModelName
        : [options.servedModelName];
  if (served.length === 0 || served.some((name) => name.length === 0)) {
    throw new MockEngineError('invalid_option', 'servedModelName must not be empty');
  }
  const optionalCount = (name: string, v: number | undefined, min = 0) =>
    v === undefined ? undefined : checkNumber(name, v, 0, { min, integer: true });
  const script = [...(options.script ?? [])];
  compileScript(script);
  return {
    model,
    servedModelNames: served,
    apiKey: options.apiKey === '' ? undefined : options.apiKey,
    loadDelay: checkNumber('loadDelay', options.loadDelay, 0),
    tokensPerSecond: checkNumber('tokensPerSecond', options.tokensPerSecond, 100),
    ttft: checkNumber('ttft', options.ttft, 20),
    maxTokensDefault: checkNumber('maxTokensDefault', options.maxTokensDefault, 32, {
      min: 1,
      integer: true,
    }),
    maxModelLen: checkNumber('maxModelLen', options.maxModelLen, 4096, { min: 1, integer: true }),
    maxNumSeqs: checkNumber('maxNumSeqs', options.maxNumSeqs, 0, { integer: true }),
    kvCacheTokens: checkNumber('kvCacheTokens', options.kvCacheTokens, 65536, {
      min: 1,
      integer: true,
    }),
    embeddingDims: checkNumber('embeddingDims', options.embeddingDims, 384, {
      min: 1,
      integer: true,
    }),
    crashAfter: optionalCount('crashAfter', options.crashAfter),
    hang: options.hang ?? false,
    dieMidStream: optionalCount('dieMidStream', options.dieMidStream),
    killMidStream: optionalCount('killMidStream', options.killMidStream),
    dropChunk: optionalCount('dropChunk', options.dropChunk, 1),
    failRate: checkNumber('failRate', options.failRate, 0, { max: 1 }),
    seed: checkNumber('seed', options.seed, 0, { integer: true }),
    requestLogDir: options.requestLogDir === '' ? undefined : options.requestLogDir,
    script,
    outputFormat:
      resolveOutputFormat(options.outputFormat) === undefined ? undefined : options.outputFormat,
    merges: options.merges ?? false,
  };
}
