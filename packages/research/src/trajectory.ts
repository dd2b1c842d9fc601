/**
 * The agent loop: render the conversation with the model's chat template, complete it
 * through `/v1/completions`, parse the Harmony text, run the requested tool, append its
 * result as a tool message, and repeat until a final answer or the turn limit.
 */
import type OpenAI from 'openai';
import type { Completion, CompletionCreateParamsNonStreaming } from 'openai/resources/completions';
import type { ChatTemplate } from './chat-template.js';
import {
  HARMONY_FINAL_HEADER,
  HARMONY_STOP,
  finalAnswerPrefill,
  interpretCompletion,
  parseToolArguments,
} from './harmony.js';
import type { Tool } from './tools.js';
import type { ChatMessage } from './types.js';
import { childSignal, messageOf } from './util.js';

/** How a trajectory ended. */
export type TrajectoryStatus =
  /** The model gave a final answer. */
  | 'completed'
  /** `maxTurns` completions without a final answer. */
  | 'max_turns'
  /** A completion hit `max_tokens`. */
  | 'truncated'
  /** The model stopped without a tool call or a final answer. */
  | 'no_answer'
  /** The conversation outgrew the model's context length. */
  | 'context_full'
  /** The inference endpoint failed (after the client's retries). */
  | 'failed';

/** A problem met on the way; most are also shown to the model as tool messages. */
export interface TrajectoryError {
  turn: number;
  /**
   * `invalid_arguments`, `unknown_tool`, `tool_failed`, `truncated`, `no_answer`,
   * `max_turns`, `context_full` or `engine`.
   */
  type: string;
  message: string;
  tool?: string;
}

/** One completion call of a trajectory. */
export interface TurnRecord {
  turn: number;
  promptTokens: number;
  completionTokens: number;
  finishReason: string | null;
  generationMs: number;
  /** `max_tokens` actually sent, when the context length forced it below `--max-tokens`. */
  maxTokens?: number;
  /** The tool the turn called, if any. */
  tool?: string;
  toolMs?: number;
  /**
   * The second completion of a last turn whose model asked for a tool: its analysis was kept
   * and a final answer forced (same `turn` number as the completion before it).
   */
  forcedFinal?: true;
}

/** One line of the output JSONL. */
export interface Trajectory {
  id: string;
  question: string;
  reference?: string;
  model: string;
  status: TrajectoryStatus;
  /** The final answer, or null when there is none. */
  answer: string | null;
  /** The conversation in chat format: assistant `thinking`, `tool_calls`, tool messages. */
  messages: ChatMessage[];
  /** The Harmony text of the last turn: its rendered prompt, the completion and its stop token. */
  raw: string;
  turns: TurnRecord[];
  toolCalls: number;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  timings: {
    startedAt: string;
    finishedAt: string;
    totalMs: number;
    generationMs: number;
    toolMs: number;
  };
  errors: TrajectoryError[];
}

/** Options of {@link runTrajectory}. */
export interface TrajectoryOptions {
  client: OpenAI;
  model: string;
  template: ChatTemplate;
  tools: readonly Tool[];
  id: string;
  question: string;
  reference?: string;
  /** Developer instructions, sent as the first (system) message. */
  systemPrompt?: string;
  /** Completions per trajectory, default 20. */
  maxTurns?: number;
  /** `max_tokens` of each completion, default 4096. */
  maxTokens?: number;
  /** Tool calls per trajectory; the turn after the last one must answer. Default: no limit. */
  maxToolCalls?: number;
  /**
   * On the last turn (`maxTurns`, or after `maxToolCalls`), a tool call is not run: the model
   * is made to write its final answer instead, as the original tool did. Default true.
   */
  forceFinalAnswer?: boolean;
  reasoningEffort?: string;
  temperature?: number;
  /** Sent as each request's `seed`. */
  seed?: number;
  /** Stop strings; default {@link HARMONY_STOP}. */
  stop?: readonly string[];
  signal?: AbortSignal;
}

/** Instructions given to the model when no system prompt is set. */
export const DEFAULT_SYSTEM_PROMPT =
  'You are a careful research assistant. Use the search tool to find sources and open_url to ' +
  'read them before answering. Prefer primary sources, check facts against more than one ' +
  'source when they matter, and give a concise final answer that cites the URLs you used.';

// vLLM and SGLang accept these beyond OpenAI's schema: keep special tokens in the text so
// the Harmony headers survive, and never add a BOS token to a prompt that already has one.
type EngineCompletionParams = CompletionCreateParamsNonStreaming & {
  skip_special_tokens: boolean;
  add_special_tokens: boolean;
};

/**
 * Runs one research trajectory. Never throws for model, tool or engine failures: they end
 * up in `status` and `errors`. Throws only if `signal` aborts.
 *
 * @example
 * ```ts
 * const trajectory = await runTrajectory({
 *   client: new OpenAI({ baseURL: 'http://localhost:8780/v1', apiKey: 'EMPTY' }),
 *   model: 'openai/gpt-oss-120b',
 *   template: await loadChatTemplate('/models/gpt-oss-120b'),
 *   tools: createWebTools({ serperApiKey, jinaApiKey }),
 *   id: 'q1',
 *   question: 'Who proposed PagedAttention?',
 * });
 * ```
 */
export async function runTrajectory(options: TrajectoryOptions): Promise<Trajectory> {
  const started = Date.now();
  const maxTurns = options.maxTurns ?? 20;
  const maxTokens = options.maxTokens ?? 4096;
  const forceFinal = options.forceFinalAnswer ?? true;
  const toolsByName = new Map(options.tools.map((tool) => [tool.definition.function.name, tool]));
  const definitions = options.tools.map((tool) => tool.definition);
  const messages: ChatMessage[] = [
    { role: 'system', content: options.systemPrompt ?? DEFAULT_SYSTEM_PROMPT },
    { role: 'user', content: options.question },
  ];
  const turns: TurnRecord[] = [];
  const errors: TrajectoryError[] = [];
  let status: TrajectoryStatus = 'max_turns';
  let answer: string | null = null;
  let raw = '';
  let toolCalls = 0;

  for (let turn = 1; turn <= maxTurns; turn += 1) {
    let prompt = options.template.render({
      messages,
      tools: definitions,
      addGenerationPrompt: true,
      ...(options.reasoningEffort === undefined
        ? {}
        : { reasoningEffort: options.reasoningEffort }),
    });
    const params: EngineCompletionParams = {
      model: options.model,
      prompt,
      max_tokens: maxTokens,
      stop: [...(options.stop ?? HARMONY_STOP)],
      skip_special_tokens: false,
      add_special_tokens: false,
    };
    if (options.temperature !== undefined) params.temperature = options.temperature;
    if (options.seed !== undefined) params.seed = options.seed;

    const first = await completeTurn(options, params, turn);
    if ('error' in first) {
      errors.push(first.error);
      status = first.status;
      break;
    }
    turns.push(first.record);
    let text = first.text;
    let parsed = interpretCompletion(text, first.record.finishReason);
    const lastTurn =
      turn === maxTurns ||
      (options.maxToolCalls !== undefined && toolCalls >= options.maxToolCalls);
    if (parsed.kind === 'tool_call' && lastTurn && forceFinal) {
      // No tool runs on the last turn: keep the model's analysis, open a final message.
      const forcedPrompt = `${prompt}${finalAnswerPrefill(text)}`;
      const forced = await completeTurn(
        options,
        { ...params, prompt: forcedPrompt, stop: FINAL_ANSWER_STOP },
        turn,
      );
      if ('error' in forced) {
        errors.push(forced.error);
        status = forced.status;
        break;
      }
      forced.record.forcedFinal = true;
      turns.push(forced.record);
      const finish = forced.record.finishReason;
      const answered = interpretCompletion(`${HARMONY_FINAL_HEADER}${forced.text}`, finish);
      parsed =
        answered.kind === 'final' && answered.answer !== ''
          ? { kind: 'final', thinking: parsed.thinking, answer: answered.answer }
          : {
              kind: 'incomplete',
              thinking: parsed.thinking,
              reason: finish === 'length' ? 'length' : 'no_answer',
            };
      prompt = forcedPrompt;
      text = forced.text;
    }
    if (parsed.kind === 'final') {
      messages.push({
        role: 'assistant',
        content: parsed.answer,
        ...(parsed.thinking ? { thinking: parsed.thinking } : {}),
      });
      raw = `${prompt}${text}<|return|>`;
      answer = parsed.answer;
      status = 'completed';
      break;
    }
    if (parsed.kind === 'incomplete') {
      raw = `${prompt}${text}`;
      status = parsed.reason === 'length' ? 'truncated' : 'no_answer';
      errors.push({
        turn,
        type: parsed.reason === 'length' ? 'truncated' : 'no_answer',
        message:
          parsed.reason === 'length'
            ? `the completion reached max_tokens (${params.max_tokens}); raise --max-tokens`
            : 'the model stopped without a tool call or a final answer',
      });
      break;
    }

    const call = parsed;
    raw = `${prompt}${text}<|call|>`;
    toolCalls += 1;
    const callId = `call_${toolCalls}`;
    messages.push({
      role: 'assistant',
      content: '',
      ...(call.thinking ? { thinking: call.thinking } : {}),
      tool_calls: [
        {
          id: callId,
          type: 'function',
          function: { name: call.name, arguments: call.arguments },
        },
      ],
    });
    const toolStart = Date.now();
    const content = await callTool(
      call.name,
      call.arguments,
      toolsByName,
      options.signal,
      (type, message) => errors.push({ turn, type, message, tool: call.name }),
    );
    first.record.tool = call.name;
    first.record.toolMs = Date.now() - toolStart;
    messages.push({ role: 'tool', tool_call_id: callId, name: call.name, content });
  }

  if (status === 'max_turns') {
    errors.push({
      turn: turns.length,
      type: 'max_turns',
      message: `no final answer after ${maxTurns} turns; raise --max-turns`,
    });
  }
  const finished = Date.now();
  const promptTokens = sum(turns.map((t) => t.promptTokens));
  const completionTokens = sum(turns.map((t) => t.completionTokens));
  const trajectory: Trajectory = {
    id: options.id,
    question: options.question,
    model: options.model,
    status,
    answer,
    messages,
    raw,
    turns,
    toolCalls,
    usage: { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens },
    timings: {
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date(finished).toISOString(),
      totalMs: finished - started,
      generationMs: sum(turns.map((t) => t.generationMs)),
      toolMs: sum(turns.map((t) => t.toolMs ?? 0)),
    },
    errors,
  };
  if (options.reference !== undefined) trajectory.reference = options.reference;
  return trajectory;
}

/** Stops of a forced final answer: the end of the answer, or anything that is not it. */
const FINAL_ANSWER_STOP = ['<|return|>', '<|end|>', '<|call|>', '<|endoftext|>'];

/** One completion of a turn: its text and record, or the error that ends the trajectory. */
async function completeTurn(
  options: TrajectoryOptions,
  params: EngineCompletionParams,
  turn: number,
): Promise<
  | { text: string; record: TurnRecord }
  | { error: TrajectoryError; status: 'context_full' | 'failed' }
> {
  const started = Date.now();
  const request = childSignal(options.signal);
  let completion: Completion;
  try {
    completion = await completeWithinContext(options.client, params, request.signal);
  } catch (error) {
    if (options.signal?.aborted) throw error;
    return error instanceof ContextFullError
      ? { error: { turn, type: 'context_full', message: error.message }, status: 'context_full' }
      : { error: { turn, type: 'engine', message: messageOf(error) }, status: 'failed' };
  } finally {
    request.dispose();
  }
  const choice = completion.choices[0];
  const record: TurnRecord = {
    turn,
    promptTokens: completion.usage?.prompt_tokens ?? 0,
    completionTokens: completion.usage?.completion_tokens ?? 0,
    finishReason: choice?.finish_reason ?? null,
    generationMs: Date.now() - started,
  };
  const maxTokens = options.maxTokens ?? 4096;
  if (params.max_tokens !== maxTokens) record.maxTokens = params.max_tokens ?? maxTokens;
  return { text: choice?.text ?? '', record };
}

/** The smallest completion worth asking for when the context is nearly full. */
const MIN_COMPLETION_TOKENS = 16;

class ContextFullError extends Error {}

/**
 * Reads an engine's context-length refusal (HTTP 400): the model's limit and the prompt's
 * tokens. Understands vLLM's wordings ("maximum context length is 4096 tokens ... (3900
 * in the messages, ...)" and "... your request has 3900 input tokens"). Pure.
 */
export function parseContextLengthError(
  message: string,
): { maxContext: number; promptTokens: number } | undefined {
  const maxContext = /maximum context length is (\d+)/i.exec(message)?.[1];
  const promptTokens =
    /\((\d+) in the messages/i.exec(message)?.[1] ?? /has (\d+) input tokens/i.exec(message)?.[1];
  if (maxContext === undefined || promptTokens === undefined) return undefined;
  return { maxContext: Number(maxContext), promptTokens: Number(promptTokens) };
}

/**
 * Completes `params`; when the engine refuses because prompt + `max_tokens` exceed the
 * context length, asks once more for what still fits (the conversation grows with every
 * tool result, so a fixed `max_tokens` eventually overflows). Throws `ContextFullError`
 * when less than {@link MIN_COMPLETION_TOKENS} fit.
 */
async function completeWithinContext(
  client: OpenAI,
  params: EngineCompletionParams,
  signal: AbortSignal | undefined,
): Promise<Completion> {
  const requestOptions = signal ? { signal } : undefined;
  try {
    return await client.completions.create(params, requestOptions);
  } catch (error) {
    const status = (error as { status?: unknown }).status;
    const limit = status === 400 ? parseContextLengthError(messageOf(error)) : undefined;
    if (limit === undefined) throw error;
    const room = limit.maxContext - limit.promptTokens;
    if (room < MIN_COMPLETION_TOKENS) {
      throw new ContextFullError(
        `the prompt has ${limit.promptTokens} tokens, the model's context ${limit.maxContext}: ` +
          `lower --tool-result-max-chars or --max-turns`,
      );
    }
    params.max_tokens = Math.min(params.max_tokens ?? room, room);
    return client.completions.create(params, requestOptions);
  }
}

/**
 * Runs a tool call and returns the tool message's content. Bad arguments, unknown tools and
 * tool failures come back as an `Error: ...` text the model can react to (retry with fixed
 * arguments, try another source), and are reported through `onError`.
 */
async function callTool(
  name: string,
  rawArguments: string,
  tools: ReadonlyMap<string, Tool>,
  signal: AbortSignal | undefined,
  onError: (type: string, message: string) => void,
): Promise<string> {
  const tool = tools.get(name);
  if (tool === undefined) {
    const message = `unknown tool "${name}"; available tools: ${[...tools.keys()].join(', ')}`;
    onError('unknown_tool', message);
    return `Error: ${message}`;
  }
  const args = parseToolArguments(rawArguments);
  if (!args.ok) {
    const message = `${args.error}. Call ${name} again with a JSON object as arguments.`;
    onError('invalid_arguments', message);
    return `Error: ${message}`;
  }
  try {
    return await tool.run(args.value, signal);
  } catch (error) {
    if (signal?.aborted) throw error;
    const message = `${name} failed: ${messageOf(error)}`;
    onError('tool_failed', message);
    return `Error: ${message}`;
  }
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}
