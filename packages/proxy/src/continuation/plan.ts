/**
 * What the proxy does with a generation request so that it can be continued on another
 * worker if its worker dies (pure: no I/O). A continuable request is sent upstream as a
 * stream with `return_token_ids` (vLLM >= 0.10.2, field names of vLLM main at 003fe59) and
 * usage; a request that cannot be continued exactly is sent as it is and, if cut, ends as
 * before — counted under the reason given here.
 */
import type { DeploymentView } from '@es/pool';
import { RawJson } from '../raw-json.js';
import { withMembers } from '../request-body.js';
import type { ChatOutputFormat } from './output-parser.js';

/** Why a request is not continued (the `reason` label of a `refused` continuation). */
export type RefusalReason =
  /** A field the proxy would rewrite has the wrong type: sent as is, for the engine's 400. */
  | 'invalid_request'
  | 'n'
  | 'best_of'
  | 'beam_search'
  | 'structured_output'
  | 'echo'
  | 'prompt_logprobs'
  | 'tools'
  | 'parser'
  | 'engine'
  | 'batch_prompt'
  | 'suffix'
  | 'continuous_usage'
  | 'disabled';

/** Why a continued generation may differ from an uncut one (the `inexact` reasons). */
export type InexactReason =
  | 'penalties'
  | 'seeded_sampling'
  | 'bad_words'
  | 'top_logprobs'
  | 'text_mismatch'
  /** The text path: the continuing engine tokenizes the text again, maybe otherwise. */
  | 'retokenized';

/**
 * How a cut generation goes on: `ids`, token-exact from the prompt's and the generated
 * ids (engines whose OpenAI server returns token ids: vLLM >= 0.10.2, the mock engine);
 * `text`, from the text the client received, which the continuing engine tokenizes again
 * (SGLang, whose chat streams carry no token ids): chat as the partial assistant message
 * with `continue_final_message`, completions as prompt + text.
 */
export type ContinuationPath = 'ids' | 'text';

/** The generation kinds the proxy can continue. */
export type GenerationKind = 'chat' | 'completion';

/** A request that will be relayed and, if cut, continued. */
export interface ContinuablePlan {
  continuable: true;
  kind: GenerationKind;
  path: ContinuationPath;
  /** The client asked for a stream. */
  clientStream: boolean;
  /** The client asked for `return_token_ids` itself (else they are nulled, as vLLM does). */
  clientTokenIds: boolean;
  /** A streaming client asked for the usage chunk (`stream_options.include_usage`). */
  clientUsage: boolean;
  /** What is sent to the first worker. */
  upstreamBody: Buffer;
  /** `max_tokens` (or `max_completion_tokens`) when given. */
  maxTokens: number | undefined;
  minTokens: number;
  stop: string[];
  includeStopStr: boolean;
  /** Chat `logprobs: true` or completions `logprobs: k`: the `k` (chat: `top_logprobs`). */
  logprobs: number | undefined;
  /** Why a continuation would not be token-exact (empty: exact). */
  inexact: InexactReason[];
  /** The client's fields a continuation body carries (sampling, `user`, ...). */
  body: Readonly<Record<string, unknown>>;
  /**
   * Chat output the engine parses (reasoning, tool calls): a continuation's raw text is
   * parsed by the proxy in the same format. Absent: the text is content as it is.
   */
  output?: ChatOutputFormat;
}

/** A request that is forwarded as it is; if cut, it ends with an error counted by reason. */
export interface RefusedPlan {
  continuable: false;
  reason: RefusalReason;
}

export type GenerationPlan = ContinuablePlan | RefusedPlan;

const CHAT_PATH = '/v1/chat/completions';
const COMPLETION_PATH = '/v1/completions';

/** The generation kind of a request path (query ignored), or undefined for other routes. */
export function generationKind(path: string): GenerationKind | undefined {
  const q = path.indexOf('?');
  const bare = q < 0 ? path : path.slice(0, q);
  if (bare === CHAT_PATH) return 'chat';
  if (bare === COMPLETION_PATH) return 'completion';
  return undefined;
}

/** Engines whose OpenAI server takes token-id prompts and returns token ids. */
const TOKEN_ID_ENGINES = new Set(['vllm', 'mock']);

/** The continuation path of a deployment's engine. */
export function continuationPath(deployment: DeploymentView): ContinuationPath {
  return TOKEN_ID_ENGINES.has(deployment.engine) ? 'ids' : 'text';
}

const present = (v: unknown) => v !== undefined && v !== null;

function refusal(
  kind: GenerationKind,
  body: Readonly<Record<string, unknown>>,
): RefusalReason | undefined {
  // The proxy rewrites these: a wrong type must reach the engine unchanged (its 400).
  const options = body.stream_options;
  if (
    (present(body.stream) && typeof body.stream !== 'boolean') ||
    (present(options) && (typeof options !== 'object' || Array.isArray(options))) ||
    // vLLM refuses stream_options without a stream.
    (present(options) && body.stream !== true) ||
    (present(body.return_token_ids) && typeof body.return_token_ids !== 'boolean')
  ) {
    return 'invalid_request';
  }
  if (present(body.n) && body.n !== 1) return 'n';
  if (present(body.best_of) && body.best_of !== 1) return 'best_of';
  if (body.use_beam_search === true) return 'beam_search';
  const format = body.response_format as { type?: unknown } | null | undefined;
  if (
    (present(format) && format?.type !== 'text') ||
    present(body.guided_json) ||
    present(body.guided_regex) ||
    present(body.guided_choice) ||
    present(body.guided_grammar) ||
    present(body.structural_tag) ||
    present(body.structured_outputs)
  ) {
    return 'structured_output';
  }
  if (body.echo === true) return 'echo';
  if (present(body.prompt_logprobs) && body.prompt_logprobs !== 0) return 'prompt_logprobs';
  if (
    (options as { continuous_usage_stats?: unknown } | null | undefined)?.continuous_usage_stats
  ) {
    return 'continuous_usage';
  }
  if (kind !== 'chat') {
    if (present(body.suffix)) return 'suffix';
    const prompt = body.prompt;
    // One prompt: a string, a list of one string, or one list of token ids.
    const single =
      typeof prompt === 'string' ||
      (prompt instanceof RawJson && prompt.isSinglePrompt()) ||
      (Array.isArray(prompt) &&
        ((prompt.length === 1 && typeof prompt[0] === 'string') ||
          (prompt.length > 0 && prompt.every((p) => Number.isInteger(p)))));
    if (!single) return 'batch_prompt';
  }
  return undefined;
}

/**
 * What the text path sends again (the messages, or the prompt's text), each value parsed
 * once; or why it cannot continue the request: output the engine parses (the partial
 * message would have to be its raw text, which the client never saw), a token-id prompt,
 * token ids asked for (a text continuation has none), a client's own partial message.
 */
function textPathInput(
  kind: GenerationKind,
  body: Readonly<Record<string, unknown>>,
  output: ChatOutputFormat | undefined,
): { input: Record<string, unknown> } | { refusal: RefusalReason } {
  if (output !== undefined) return { refusal: 'parser' };
  if (body.return_token_ids === true) return { refusal: 'engine' };
  if (kind === 'chat') {
    if (body.continue_final_message === true) return { refusal: 'engine' };
    const messages = plain(body.messages);
    return Array.isArray(messages) ? { input: { messages } } : { refusal: 'engine' };
  }
  const prompt = plain(body.prompt);
  const text: unknown = Array.isArray(prompt) ? prompt[0] : prompt;
  return typeof text === 'string' ? { input: { prompt: text } } : { refusal: 'engine' };
}

/** A value of the body as plain JSON (a large prompt is kept as the client's bytes). */
function plain(value: unknown): unknown {
  return value instanceof RawJson
    ? JSON.parse(value.raw.toString('utf8', value.start, value.end))
    : value;
}

/** Tool parsers and reasoning parsers the proxy replays on raw text (see `output-parser.ts`). */
const REPLAYED_REASONING = new Set(['deepseek_r1', 'qwen3']);
const REPLAYED_TOOLS = new Set(['hermes']);

/**
 * How a chat request's output is parsed by the engine, for the proxy to replay on a
 * continuation's raw text: the format, undefined when the engine passes text through, or
 * why it cannot be continued. Tools are parsed only with `tool_choice` `auto` (the
 * default); `required` and a named function make vLLM constrain the output to JSON
 * (`tools`), as do the legacy `functions`.
 */
export function chatOutput(
  body: Readonly<Record<string, unknown>>,
  deployment: DeploymentView,
): ChatOutputFormat | undefined | 'tools' | 'parser' {
  const hasTools = Array.isArray(body.tools) && body.tools.length > 0;
  const choice = body.tool_choice;
  if (
    present(body.functions) ||
    (hasTools && present(choice) && choice !== 'auto' && choice !== 'none')
  ) {
    return 'tools';
  }
  const parsesTools = hasTools && choice !== 'none';
  const parsers = deployment.chatParsers;
  // gpt-oss (by its name, or vLLM's Harmony parsers named for a model path that hides it).
  if (
    parsers?.harmony === true ||
    parsers?.reasoning === 'openai_gptoss' ||
    parsers?.tools === 'openai'
  ) {
    return { kind: 'harmony' };
  }
  const reasoning = parsers?.reasoning;
  if (reasoning !== undefined && !REPLAYED_REASONING.has(reasoning)) return 'parser';
  if (parsesTools) {
    // vLLM answers a tool request without a tool parser with a 400: sent as it is.
    if (parsers?.tools === undefined) return 'tools';
    if (!REPLAYED_TOOLS.has(parsers.tools)) return 'parser';
  }
  if (reasoning === undefined && !parsesTools) return undefined;
  return { kind: 'tagged', reasoning: reasoning !== undefined, tools: parsesTools };
}

function positiveInt(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : undefined;
}

function stopStrings(value: unknown): string[] {
  if (typeof value === 'string') return value === '' ? [] : [value];
  if (Array.isArray(value))
    return value.filter((s): s is string => typeof s === 'string' && s !== '');
  return [];
}

function inexactReasons(body: Readonly<Record<string, unknown>>): InexactReason[] {
  const reasons: InexactReason[] = [];
  const nonzero = (v: unknown) => typeof v === 'number' && v !== 0;
  // vLLM counts presence/frequency penalties over the request's own output only.
  if (nonzero(body.presence_penalty) || nonzero(body.frequency_penalty)) reasons.push('penalties');
  const temperature = body.temperature;
  // A seeded sampler restarts its random stream with the continuation.
  if (present(body.seed) && !(typeof temperature === 'number' && temperature === 0)) {
    reasons.push('seeded_sampling');
  }
  if (Array.isArray(body.bad_words) && body.bad_words.length > 0) reasons.push('bad_words');
  return reasons;
}

/**
 * Decide how a generation request is relayed.
 * @param enabled `false` when continuation is switched off (`--max-continuations 0`).
 * @param raw the client's bytes of `body`: the upstream body is made from them (one copy).
 * @example
 * const plan = planGeneration('chat', body, deployment, true);
 * if (plan.continuable) send(plan.upstreamBody);
 */
export function planGeneration(
  kind: GenerationKind,
  body: Readonly<Record<string, unknown>>,
  deployment: DeploymentView,
  enabled: boolean,
  raw?: Buffer,
): GenerationPlan {
  if (!enabled) return { continuable: false, reason: 'disabled' };
  const reason = refusal(kind, body);
  if (reason !== undefined) return { continuable: false, reason };
  const output = kind === 'chat' ? chatOutput(body, deployment) : undefined;
  if (typeof output === 'string') return { continuable: false, reason: output };
  const path = continuationPath(deployment);
  let resent: Record<string, unknown> = {};
  if (path === 'text') {
    const text = textPathInput(kind, body, output);
    if ('refusal' in text) return { continuable: false, reason: text.refusal };
    resent = text.input;
  }
  const clientStream = body.stream === true;
  const options = body.stream_options as { include_usage?: unknown } | null | undefined;
  const logprobs =
    kind === 'chat'
      ? body.logprobs === true
        ? (positiveInt(body.top_logprobs) ?? 0)
        : undefined
      : positiveInt(body.logprobs);
  const rewritten =
    path === 'ids'
      ? { stream: true, stream_options: { include_usage: true }, return_token_ids: true }
      : { stream: true, stream_options: { include_usage: true } };
  const inexact = inexactReasons(body);
  if (path === 'text') inexact.push('retokenized');
  return {
    continuable: true,
    kind,
    path,
    clientStream,
    clientTokenIds: body.return_token_ids === true,
    clientUsage: clientStream && options?.include_usage === true,
    upstreamBody:
      raw === undefined
        ? Buffer.from(JSON.stringify({ ...body, ...rewritten }))
        : withMembers(raw, body, rewritten),
    maxTokens: positiveInt(body.max_completion_tokens) ?? positiveInt(body.max_tokens),
    minTokens: positiveInt(body.min_tokens) ?? 0,
    stop: stopStrings(body.stop),
    includeStopStr: body.include_stop_str_in_output === true,
    logprobs,
    // Chat top logprobs continued through completions can lose candidates that share their
    // text: the stitcher adds `top_logprobs` when it sees that happen.
    inexact,
    ...(output === undefined ? {} : { output }),
    // Only what a continuation carries: the prompt (often most of a large body) is kept for
    // the whole generation only on the text path, which sends it again.
    body: { ...carried(body), ...resent },
  };
}

/** Sampling fields a continuation carries as they are (both endpoints accept them). */
const CARRIED = [
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'seed',
  'stop_token_ids',
  'ignore_eos',
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'length_penalty',
  'logit_bias',
  'bad_words',
  'allowed_token_ids',
  'skip_special_tokens',
  'spaces_between_special_tokens',
  'truncate_prompt_tokens',
  'priority',
  'user',
  'vllm_xargs',
] as const;

function carried(body: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const key of CARRIED) if (body[key] !== undefined) kept[key] = body[key];
  return kept;
}

/**
 * The body that continues `plan` on the text path after the client received `text`, made
 * of about `generated` tokens (chunks counted: the engine sends no ids): chat goes on from
 * the partial assistant message (`continue_final_message`, no generation prompt),
 * completions from prompt + text. Limits, stop strings and streaming as
 * {@link continuationBody}.
 * @returns the path to send it to, and the body.
 */
export function textContinuation(
  plan: ContinuablePlan,
  model: string,
  text: string,
  generated: number,
): { path: string; body: Buffer } {
  const body = continuationFields(plan, model, generated);
  if (plan.kind === 'chat') {
    const messages = plan.body.messages as unknown[];
    body.messages = [...messages, { role: 'assistant', content: text }];
    body.continue_final_message = true;
    body.add_generation_prompt = false;
    if (plan.logprobs !== undefined) {
      body.logprobs = true;
      body.top_logprobs = plan.logprobs;
    }
    return { path: CHAT_PATH, body: Buffer.from(JSON.stringify(body)) };
  }
  body.prompt = `${plan.body.prompt as string}${text}`;
  if (plan.logprobs !== undefined) body.logprobs = plan.logprobs;
  return { path: COMPLETION_PATH, body: Buffer.from(JSON.stringify(body)) };
}

/** The fields every continuation body has: sampling, model, limits left, stops, stream. */
function continuationFields(
  plan: ContinuablePlan,
  model: string,
  generated: number,
): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const key of CARRIED) {
    const value = plan.body[key];
    if (value !== undefined) body[key] = value;
  }
  body.model = model;
  if (plan.maxTokens !== undefined) body.max_tokens = plan.maxTokens - generated;
  const minLeft = plan.minTokens - generated;
  if (minLeft > 0) body.min_tokens = minLeft;
  if (plan.stop.length > 0) {
    body.stop = plan.stop;
    body.include_stop_str_in_output = true;
  }
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

/**
 * The `/v1/completions` body that continues `plan` after `generated` ids: the prompt's ids
 * followed by every generated id, the token limits reduced by what was generated, stop
 * strings kept in the output (`include_stop_str_in_output`: the proxy finds a stop string
 * that spans the splice itself), streamed with token ids and usage.
 * @param model the deployment's served name.
 */
export function continuationBody(
  plan: ContinuablePlan,
  model: string,
  promptIds: readonly number[],
  generated: readonly number[],
): Buffer {
  const body = continuationFields(plan, model, generated.length);
  body.prompt = [...promptIds, ...generated];
  if (plan.logprobs !== undefined) body.logprobs = plan.logprobs;
  // The parser needs the markers (Harmony's are special tokens).
  if (plan.output !== undefined) body.skip_special_tokens = false;
  body.return_token_ids = true;
  return Buffer.from(JSON.stringify(body));
}
