/**
 * Parsing of Harmony-format completions (gpt-oss): the text a model writes after the
 * prompt's `<|start|>assistant` header, up to the stop token.
 *
 * A completion is a sequence of messages. The first continues the open assistant header;
 * later ones begin with `<|start|>role`. A header holds `<|channel|>name`, an optional
 * recipient `to=functions.name` (before or after the channel) and an optional content type
 * (`<|constrain|>json`); the body follows `<|message|>` and ends at `<|end|>`, `<|call|>`,
 * `<|return|>` or the end of the text (engines cut the stop token off).
 */

/** The stop strings a Harmony generation ends at: a tool call or the end of the answer. */
// `<|end|>` is deliberately not a stop: it closes analysis messages, after which the model
// continues in the same turn with its tool call or final answer.
export const HARMONY_STOP: readonly string[] = ['<|call|>', '<|return|>', '<|endoftext|>'];

/** One message of a Harmony completion. */
export interface HarmonyMessage {
  role: string;
  /** `analysis`, `commentary`, `final`, ... or undefined for text without Harmony headers. */
  channel?: string;
  /** e.g. `functions.search` for a tool call. */
  recipient?: string;
  /** e.g. `json` (from `<|constrain|>json`). */
  contentType?: string;
  content: string;
  /** False when the text ended before the message's `<|message|>` marker. */
  complete: boolean;
}

/** What a completion asks the agent loop to do next. */
export type HarmonyTurn =
  | {
      kind: 'tool_call';
      /** Analysis (and recipient-less commentary) text before the call. */
      thinking: string;
      /** The full recipient, e.g. `functions.search`. */
      recipient: string;
      /** The function name: the recipient without its `functions.` namespace. */
      name: string;
      /** The arguments as written, normally a JSON object. */
      arguments: string;
    }
  | { kind: 'final'; thinking: string; answer: string }
  | {
      kind: 'incomplete';
      thinking: string;
      /** `length`: cut by max tokens; `no_answer`: stopped without a call or a final message. */
      reason: 'length' | 'no_answer';
    };

const START = '<|start|>';
const MESSAGE = '<|message|>';
const BODY_END = /<\|(?:end|call|return|endoftext)\|>/;

/**
 * Splits completion text into Harmony messages. Pure; never throws.
 *
 * @example
 * ```ts
 * parseHarmony('<|channel|>final<|message|>Paris');
 * // [{ role: 'assistant', channel: 'final', content: 'Paris', complete: true }]
 * ```
 */
export function parseHarmony(text: string): HarmonyMessage[] {
  const messages: HarmonyMessage[] = [];
  const segments = text.split(START);
  segments.forEach((segment, index) => {
    // The first segment continues the prompt's `<|start|>assistant` header.
    const withRole = index === 0 ? `assistant${segment}` : segment;
    if (index === 0 && segment.trim() === '') return;
    const at = withRole.indexOf(MESSAGE);
    if (at < 0) {
      if (index === 0 && !withRole.includes('<|')) {
        messages.push({ role: 'assistant', content: segment.trim(), complete: true });
      } else {
        messages.push({ ...parseHeader(withRole), content: '', complete: false });
      }
      return;
    }
    const body = withRole.slice(at + MESSAGE.length);
    const end = body.search(BODY_END);
    messages.push({
      ...parseHeader(withRole.slice(0, at)),
      content: end < 0 ? body : body.slice(0, end),
      complete: true,
    });
  });
  return messages;
}

function parseHeader(header: string): Omit<HarmonyMessage, 'content' | 'complete'> {
  const role = /^\s*([^\s<]+)/.exec(header)?.[1] ?? 'assistant';
  const channel = /<\|channel\|>\s*([^\s<]+)/.exec(header)?.[1];
  const recipient = /\bto=([^\s<]+)/.exec(header)?.[1];
  const contentType =
    /<\|constrain\|>\s*([^\s<]+)/.exec(header)?.[1] ??
    /<\|channel\|>\s*[^\s<]+\s+([^\s<=]+)\s*$/.exec(header)?.[1];
  const parsed: Omit<HarmonyMessage, 'content' | 'complete'> = { role };
  if (channel !== undefined) parsed.channel = channel;
  if (recipient !== undefined) parsed.recipient = recipient;
  if (contentType !== undefined) parsed.contentType = contentType;
  return parsed;
}

/**
 * Decides what a completion means for the agent loop: a tool call (the last message has a
 * recipient), a final answer (a `final` channel message, or plain text without Harmony
 * headers), or an incomplete turn (cut by `max_tokens`, or stopped with neither).
 *
 * @param finishReason The choice's `finish_reason` (`stop`, `length`).
 */
export function interpretCompletion(text: string, finishReason: string | null): HarmonyTurn {
  const messages = parseHarmony(text);
  const thinking = messages
    .filter((m) => m.channel === 'analysis' || (m.channel === 'commentary' && !m.recipient))
    .map((m) => m.content.trim())
    .filter((content) => content !== '')
    .join('\n\n');
  if (finishReason === 'length') return { kind: 'incomplete', thinking, reason: 'length' };

  const last = messages.at(-1);
  if (last?.recipient !== undefined && last.complete) {
    const name = last.recipient.startsWith('functions.')
      ? last.recipient.slice('functions.'.length)
      : last.recipient;
    return {
      kind: 'tool_call',
      thinking,
      recipient: last.recipient,
      name,
      arguments: last.content.trim(),
    };
  }
  const final = messages.findLast((m) => m.channel === 'final' || m.channel === undefined);
  if (final !== undefined && final.complete) {
    return { kind: 'final', thinking, answer: final.content.trim() };
  }
  return { kind: 'incomplete', thinking, reason: 'no_answer' };
}

/** Result of {@link parseToolArguments}. */
export type ToolArguments =
  { ok: true; value: Record<string, unknown> } | { ok: false; error: string };

/**
 * Parses a tool call's arguments, which must be a JSON object. An empty string means `{}`.
 * Pure; the error text is written for the model, which sees it as the tool's answer.
 */
export function parseToolArguments(raw: string): ToolArguments {
  if (raw.trim() === '') return { ok: true, value: {} };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, error: `the arguments are not valid JSON (${reason})` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: 'the arguments must be a JSON object' };
  }
  return { ok: true, value: value as Record<string, unknown> };
}

/** The header that opens a final answer, as a model writes it after `<|start|>assistant`. */
export const HARMONY_FINAL_HEADER = '<|channel|>final<|message|>';

/**
 * What to append to a turn's prompt to force a final answer instead of the tool call the
 * completion `text` ended with: the messages before the call (its analysis) are kept, the
 * call is dropped, and a `final` channel message is opened for the model to fill. Pure.
 *
 * @example
 * ```ts
 * finalAnswerPrefill('<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|channel|>commentary to=functions.search<|message|>{}');
 * // '<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|channel|>final<|message|>'
 * ```
 */
export function finalAnswerPrefill(text: string): string {
  const at = text.lastIndexOf(START);
  return at < 0
    ? HARMONY_FINAL_HEADER
    : `${text.slice(0, at)}${START}assistant${HARMONY_FINAL_HEADER}`;
}
