/**
 * What the mock "model" writes in a chat answer, and what the chat endpoint parses out of
 * it, as vLLM decides it from its arguments: `--reasoning-parser`, `--tool-call-parser`
 * with `--enable-auto-tool-choice`, and a gpt-oss `--model` (Harmony, parsed without flags).
 */
import { MockEngineError } from './errors.js';

/**
 * The output format of a reasoning / tool-calling model served with vLLM's parsers:
 * `'harmony'` (gpt-oss: reasoning and tool calls in Harmony's channels), or `<think>`
 * reasoning (`reasoning: 'think'`, vLLM's `deepseek_r1` / `qwen3` parsers) and/or Hermes
 * `<tool_call>`s parsed into `tool_calls` (`tools: 'hermes'`). Absent: plain text, as
 * before any format existed.
 */
export type OutputFormat = 'harmony' | { reasoning?: 'think'; tools?: 'hermes' };

/** An {@link OutputFormat} with every choice spelled out. */
export type ResolvedFormat =
  { kind: 'harmony' } | { kind: 'tagged'; think: boolean; hermes: boolean };

/** The engine's `outputFormat` option checked and spelled out; undefined: plain text. */
export function resolveOutputFormat(format: OutputFormat | undefined): ResolvedFormat | undefined {
  if (format === undefined) return undefined;
  if (format === 'harmony') return { kind: 'harmony' };
  if (typeof format !== 'object' || format === null) {
    throw new MockEngineError(
      'invalid_option',
      `outputFormat must be "harmony" or { reasoning?: "think", tools?: "hermes" }, got ${JSON.stringify(format)}`,
    );
  }
  const { reasoning, tools } = format;
  if (reasoning !== undefined && reasoning !== 'think') {
    throw new MockEngineError(
      'invalid_option',
      `outputFormat.reasoning must be "think", got ${JSON.stringify(reasoning)}`,
    );
  }
  if (tools !== undefined && tools !== 'hermes') {
    throw new MockEngineError(
      'invalid_option',
      `outputFormat.tools must be "hermes", got ${JSON.stringify(tools)}`,
    );
  }
  if (reasoning === undefined && tools === undefined) return undefined;
  return { kind: 'tagged', think: reasoning === 'think', hermes: tools === 'hermes' };
}

/** vLLM's reasoning parsers the mock writes for: `<think>` models, and gpt-oss's own. */
const REASONING_PARSERS = { deepseek_r1: 'think', qwen3: 'think', openai_gptoss: 'harmony' };

/** vLLM's tool-call parsers the mock writes for: Hermes `<tool_call>`, and gpt-oss's own. */
const TOOL_CALL_PARSERS = { hermes: 'hermes', openai: 'harmony' };

/** The vLLM arguments that decide the output format (the CLI's flags). */
export interface FormatFlags {
  model: string;
  reasoningParser?: string | undefined;
  toolCallParser?: string | undefined;
  enableAutoToolChoice?: boolean | undefined;
}

const isGptOss = (model: string) => /gpt-oss/i.test(model);

function supported(parsers: Record<string, string>, harmony: boolean): string[] {
  return Object.keys(parsers).filter((name) => (parsers[name] === 'harmony') === harmony);
}

/**
 * The output format vLLM would serve with these arguments: a gpt-oss model is Harmony
 * (its own parsers `openai_gptoss` / `openai` may be named); otherwise `--reasoning-parser`
 * `deepseek_r1` or `qwen3` is `<think>` reasoning and `--tool-call-parser hermes` with
 * `--enable-auto-tool-choice` Hermes tool calls. A parser the mock does not write for, or
 * `--enable-auto-tool-choice` without a tool-call parser (as vLLM), is an `invalid_option`
 * naming the flag and the names it takes.
 * @example
 * outputFormatFromFlags({ model: 'Qwen/Qwen3-8B', reasoningParser: 'qwen3' }); // { reasoning: 'think' }
 */
export function outputFormatFromFlags(flags: FormatFlags): OutputFormat | undefined {
  const harmony = isGptOss(flags.model);
  const check = (flag: string, name: string | undefined, parsers: Record<string, string>) => {
    if (name === undefined) return undefined;
    const names = supported(parsers, harmony);
    if (names.includes(name)) return parsers[name];
    const kind = harmony ? 'a gpt-oss model (Harmony)' : 'this model';
    throw new MockEngineError(
      'invalid_option',
      `${flag} ${JSON.stringify(name)} is not supported by the mock engine for ${kind}: use ${names.join(' or ')}`,
    );
  };
  const reasoning = check('reasoningParser', flags.reasoningParser, REASONING_PARSERS);
  const tools = check('toolCallParser', flags.toolCallParser, TOOL_CALL_PARSERS);
  if (flags.enableAutoToolChoice === true && tools === undefined) {
    throw new MockEngineError(
      'invalid_option',
      `enableAutoToolChoice requires --tool-call-parser (${supported(TOOL_CALL_PARSERS, harmony).join(' or ')})`,
    );
  }
  if (harmony) return 'harmony';
  // As vLLM: without --enable-auto-tool-choice the tool-call parser parses nothing.
  const hermes = tools === 'hermes' && flags.enableAutoToolChoice === true;
  if (reasoning === undefined && !hermes) return undefined;
  return {
    ...(reasoning === undefined ? {} : { reasoning: 'think' }),
    ...(hermes ? { tools: 'hermes' } : {}),
  };
}
