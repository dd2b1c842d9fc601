/**
 * The chat endpoint's parsed output (vLLM with a reasoning and/or tool-call parser): a
 * generation's released text split into `reasoning`, `content` and a tool call, chunk by
 * chunk. The split comes from the structured answer's known roles (`document.ts`), not
 * from parsing text: each released character belongs to the token that completed it.
 */
import { traceGeneration } from './generation.js';
import type {
  Generation,
  GenerationInput,
  GenerationLimits,
  GenerationTrace,
} from './generation.js';

/** What one chunk carries of the parsed output; absent fields carry nothing. */
export interface ChatDelta {
  reasoning?: string;
  content?: string;
  /** A piece of the tool call: `name` on the call's first piece (its header), then arguments. */
  toolCall?: { name?: string; arguments: string };
}

/** A chat answer's parsed output, accumulated. */
export interface ChatOutput {
  /** The reasoning (vLLM's `reasoning`); `''` when none. */
  reasoning: string;
  /** The content; `''` when none. */
  content: string;
  /** The tool calls, arguments as the raw JSON text written (at most one). */
  toolCalls: { name: string; arguments: string }[];
  /** `tool_calls` when the answer called a tool and stopped, else the generation's. */
  finishReason: 'stop' | 'length' | 'tool_calls';
}

/** A chat answer's parsed chunks and their accumulation. */
export interface ParsedChat {
  /** One per chunk of the generation. */
  deltas: ChatDelta[];
  output: ChatOutput;
}

/**
 * Split `generation`'s released text by the roles its trace records: each chunk's released
 * characters go to the part of the token that completed them; the tool call's header goes
 * out with the chunk of the id completing it, once the text before that id is released.
 */
export function parseChat(generation: Generation, trace: GenerationTrace): ParsedChat {
  const chars = [...generation.text];
  const { charEnds, roles } = trace;
  const name = trace.call?.name ?? '';
  // Where the header stands: the id completing it, and the text's length after that id.
  const at = trace.call?.at ?? -1;
  const header = at === -1 ? undefined : { at, char: charEnds[at] ?? 0 };
  const output: ChatOutput = {
    reasoning: '',
    content: '',
    toolCalls: [],
    finishReason: generation.finishReason,
  };
  let called = false;
  let token = 0;
  let from = 0;
  let idsOut = 0;
  const deltas = trace.releasedEnds.map((to, i) => {
    const delta: ChatDelta = {};
    idsOut += generation.chunkIds[i]?.length ?? 0;
    const due = header !== undefined && idsOut > header.at;
    const call = () => {
      called = true;
      delta.toolCall = { name, arguments: '' };
      output.toolCalls.push({ name, arguments: '' });
    };
    for (let c = from; c < to; c++) {
      if (!called && due && c >= header.char) call();
      while ((charEnds[token] ?? Infinity) <= c) token++;
      const role = roles[token] ?? 'content';
      const char = chars[c]!;
      if (role === 'reasoning') {
        delta.reasoning = (delta.reasoning ?? '') + char;
        output.reasoning += char;
      } else if (role === 'content') {
        delta.content = (delta.content ?? '') + char;
        output.content += char;
      } else if (role === 'arguments') {
        // Arguments without their header (an answer that started inside the call): it first.
        if (!called) call();
        delta.toolCall ??= { arguments: '' };
        delta.toolCall.arguments += char;
        output.toolCalls[0]!.arguments += char;
      }
    }
    if (!called && due && header.char <= to) call();
    from = to;
    return delta;
  });
  if (called && generation.finishReason === 'stop') output.finishReason = 'tool_calls';
  return { deltas, output };
}

/**
 * What a chat request's answer accumulates to, as the chat endpoint parses it: with an
 * `outputFormat`, the structured answer's reasoning, content and tool call; without one,
 * the whole text as content. Pure, like {@link expectedGeneration}.
 * @example
 * expectedChatOutput(
 *   { kind: 'chat', messages: [{ role: 'user', content: 'Hi' }] },
 *   { maxTokens: 200, outputFormat: { reasoning: 'think' } },
 * ); // { reasoning: '\nthe café ...\n', content: '\n\nfox ...', toolCalls: [], finishReason: 'stop' }
 */
export function expectedChatOutput(input: GenerationInput, limits: GenerationLimits): ChatOutput {
  const { generation, trace } = traceGeneration(input, limits);
  if (limits.outputFormat === undefined) {
    return {
      reasoning: '',
      content: generation.text,
      toolCalls: [],
      finishReason: generation.finishReason,
    };
  }
  return parseChat(generation, trace).output;
}
