/**
 * The mock model's chat template, and what a structured answer reads back from a rendered
 * prompt (the tools it was offered): one definition of the prompt's text, both ways.
 */

/** One chat message as the template sees it: a role and its text. */
export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * A function the model may call: the `function` object of an OpenAI tool, as the request
 * gave it (`name`, and usually `description` and a JSON-schema `parameters`).
 */
export interface ToolFunction {
  name: string;
  [field: string]: unknown;
}

/** vLLM's chat-template parameters (`add_generation_prompt`, `continue_final_message`, `tools`). */
export interface ChatTemplateOptions {
  /** End with `<|assistant|>\n` so the model starts a new answer (default true). */
  addGenerationPrompt?: boolean;
  /** Leave the last message open so the model continues it (default false; wins over `addGenerationPrompt`). */
  continueFinalMessage?: boolean;
  /** The functions offered (the request's `tools`, none with `tool_choice: "none"`). */
  tools?: readonly ToolFunction[];
}

const TOOLS_HEADER = '<|developer|>\n# Tools\n';

/**
 * The chat template: the tools, if any, as a `<|developer|>\n# Tools\n` block of one JSON
 * line per function, then each message as `<|role|>\ncontent\n`, then `<|assistant|>\n`
 * (the generation prompt). With `continueFinalMessage` the last message has no closing
 * newline and no generation prompt follows, so generation continues that message.
 * @example
 * renderChatPrompt([{ role: 'user', content: 'Hi' }]); // '<|user|>\nHi\n<|assistant|>\n'
 */
export function renderChatPrompt(
  messages: readonly ChatMessage[],
  options: ChatTemplateOptions = {},
): string {
  const { addGenerationPrompt = true, continueFinalMessage = false, tools = [] } = options;
  const last = messages.length - 1;
  const text = messages
    .map((m, i) => `<|${m.role}|>\n${m.content}${continueFinalMessage && i === last ? '' : '\n'}`)
    .join('');
  const offered =
    tools.length === 0 ? '' : TOOLS_HEADER + tools.map((t) => `${JSON.stringify(t)}\n`).join('');
  return offered + (addGenerationPrompt && !continueFinalMessage ? `${text}<|assistant|>\n` : text);
}

/** The tool a structured answer calls: a function's name and its first parameter's. */
export interface OfferedTool {
  name: string;
  /** The first property of its `parameters` schema, else `query`. */
  parameter: string;
}

/**
 * The first tool a rendered prompt offers ({@link renderChatPrompt}'s block at its start),
 * or undefined when it offers none.
 */
export function firstOfferedTool(prompt: string): OfferedTool | undefined {
  if (!prompt.startsWith(TOOLS_HEADER)) return undefined;
  const end = prompt.indexOf('\n', TOOLS_HEADER.length);
  let tool: unknown;
  try {
    tool = JSON.parse(prompt.slice(TOOLS_HEADER.length, end === -1 ? undefined : end));
  } catch {
    return undefined;
  }
  if (typeof tool !== 'object' || tool === null) return undefined;
  const { name, parameters } = tool as { name?: unknown; parameters?: { properties?: unknown } };
  if (typeof name !== 'string') return undefined;
  const properties = parameters?.properties;
  const first =
    typeof properties === 'object' && properties !== null ? Object.keys(properties)[0] : undefined;
  return { name, parameter: first ?? 'query' };
}
