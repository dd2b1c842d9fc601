/**
 * Chat templates: found in a model directory the way Hugging Face transformers finds them,
 * rendered with `@huggingface/jinja` so prompts carry the model's own special tokens.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Template } from '@huggingface/jinja';
import { ResearchError } from './errors.js';
import { parseToolArguments } from './harmony.js';
import type { ChatMessage, ToolDefinition } from './types.js';
import { isRecord, messageOf, readTextIfExists } from './util.js';

/** What {@link ChatTemplate.render} needs besides the template. */
export interface RenderOptions {
  messages: readonly ChatMessage[];
  /** Function tools in OpenAI's `{ type: 'function', function: {...} }` shape. */
  tools?: readonly ToolDefinition[];
  /** End the prompt with the header that makes the model answer as the assistant. */
  addGenerationPrompt?: boolean;
  /** Harmony reasoning effort (`low`, `medium`, `high`), exposed to the template as `reasoning_effort`. */
  reasoningEffort?: string;
  /** Further template variables (e.g. `model_identity`, `builtin_tools`). */
  variables?: Record<string, unknown>;
}

/** A parsed chat template, ready to render. */
export interface ChatTemplate {
  /** Where the template came from (a file path, or `inline`). */
  readonly source: string;
  /** Renders a conversation into one prompt string. Throws `template_render` on template errors. */
  render(options: RenderOptions): string;
}

/** Options of {@link createChatTemplate}. */
export interface ChatTemplateOptions {
  /** Shown in errors; defaults to `inline`. */
  source?: string;
  /** Special tokens the template may use (`bos_token`, `eos_token`, ...). */
  specialTokens?: Record<string, string>;
}

/** Options of {@link loadChatTemplate}. */
export interface LoadChatTemplateOptions {
  /**
   * Which template to take when `tokenizer_config.json` holds a named list. Defaults to
   * `tool_use` when that exists (these prompts always carry tools), else `default`.
   */
  name?: string;
}

/**
 * The Harmony-style template this package ships (`templates/harmony/chat_template.jinja`),
 * written for this project: for the mock engine and tests only (`--chat-template bundled-test`),
 * never chosen silently.
 */
export const BUNDLED_TEMPLATE_DIR: string = fileURLToPath(
  new URL('../templates/harmony/', import.meta.url),
);

/**
 * Parses a Jinja chat template.
 *
 * @example
 * ```ts
 * const template = createChatTemplate('{% for m in messages %}{{ m.content }}{% endfor %}');
 * template.render({ messages: [{ role: 'user', content: 'hi' }] }); // 'hi'
 * ```
 */
export function createChatTemplate(text: string, options: ChatTemplateOptions = {}): ChatTemplate {
  const source = options.source ?? 'inline';
  let template: Template;
  try {
    template = new Template(text);
  } catch (error) {
    throw new ResearchError(
      'template_not_found',
      `cannot parse chat template ${source}: ${messageOf(error)}`,
      { cause: error },
    );
  }
  const specialTokens = options.specialTokens ?? {};
  return {
    source,
    render(renderOptions) {
      const context: Record<string, unknown> = {
        ...specialTokens,
        ...renderOptions.variables,
        messages: renderOptions.messages.map(withParsedArguments),
        add_generation_prompt: renderOptions.addGenerationPrompt ?? false,
      };
      // Templates test `tools is defined`/`tools is not none`: leave it out rather than [].
      if (renderOptions.tools && renderOptions.tools.length > 0)
        context.tools = renderOptions.tools;
      if (renderOptions.reasoningEffort !== undefined) {
        context.reasoning_effort = renderOptions.reasoningEffort;
      }
      try {
        return template.render(context);
      } catch (error) {
        throw new ResearchError(
          'template_render',
          `chat template ${source} failed to render: ${messageOf(error)}`,
          { cause: error },
        );
      }
    },
  };
}

// Hugging Face templates (gpt-oss's among them) expect tool-call arguments as a mapping
// and serialise them with `tojson`; OpenAI's chat format carries them as a JSON string.
// Arguments that are not a JSON object (a model's malformed call) stay strings.
function withParsedArguments(message: ChatMessage): object {
  if (!message.tool_calls) return message;
  return {
    ...message,
    tool_calls: message.tool_calls.map((call) => {
      const parsed = parseToolArguments(call.function.arguments);
      if (!parsed.ok || call.function.arguments.trim() === '') return call;
      return { ...call, function: { ...call.function, arguments: parsed.value } };
    }),
  };
}

/**
 * Loads the chat template of a model (or tokenizer) directory, in the order transformers
 * uses: `chat_template.jinja`, then `chat_template.json`, then `tokenizer_config.json`'s
 * `chat_template` (a string or a list of `{ name, template }`). Special tokens from
 * `tokenizer_config.json` (`bos_token`, `eos_token`, ...) are passed to the template.
 *
 * @example
 * ```ts
 * const template = await loadChatTemplate('/models/gpt-oss-120b');
 * const prompt = template.render({ messages, tools, addGenerationPrompt: true, reasoningEffort: 'high' });
 * ```
 */
export async function loadChatTemplate(
  dir: string,
  options: LoadChatTemplateOptions = {},
): Promise<ChatTemplate> {
  const template = await templateFromFiles(
    (name) => readTextIfExists(join(dir, name)),
    (name) => join(dir, name),
    options,
  );
  if (template !== undefined) return template;
  throw new ResearchError(
    'template_not_found',
    `no chat template in ${dir}: expected chat_template.jinja, chat_template.json or a ` +
      `"chat_template" in tokenizer_config.json; pass --tokenizer <model directory>`,
    { param: 'tokenizer' },
  );
}

/** Reads one file of a model's files by name; undefined when it does not exist. */
export type ModelFileReader = (name: string) => Promise<string | undefined>;

/**
 * The template of a model's files, wherever they are (a directory, a Hugging Face cache
 * snapshot, the hub), in transformers' order; undefined when none of them holds one.
 * `where` names a file in messages and in the template's `source`.
 */
export async function templateFromFiles(
  read: ModelFileReader,
  where: (name: string) => string,
  options: LoadChatTemplateOptions = {},
): Promise<ChatTemplate | undefined> {
  const configPath = where('tokenizer_config.json');
  const config = parseJsonObject(await read('tokenizer_config.json'), configPath);
  const specialTokens = config === undefined ? {} : specialTokensOf(config);

  const jinja = await read('chat_template.jinja');
  if (jinja !== undefined) {
    return createChatTemplate(jinja, { source: where('chat_template.jinja'), specialTokens });
  }

  const jsonPath = where('chat_template.json');
  const json = parseJsonObject(await read('chat_template.json'), jsonPath);
  if (json !== undefined && typeof json.chat_template === 'string') {
    return createChatTemplate(json.chat_template, { source: jsonPath, specialTokens });
  }

  if (config !== undefined && config.chat_template !== undefined) {
    const text = pickTemplate(config.chat_template, options.name, configPath);
    return createChatTemplate(text, { source: configPath, specialTokens });
  }
  return undefined;
}

function pickTemplate(value: unknown, name: string | undefined, path: string): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = new Map<string, string>();
    for (const entry of value as unknown[]) {
      if (isRecord(entry) && typeof entry.name === 'string' && typeof entry.template === 'string') {
        named.set(entry.name, entry.template);
      }
    }
    const wanted = name ?? (named.has('tool_use') ? 'tool_use' : 'default');
    const found = named.get(wanted);
    if (found !== undefined) return found;
    throw new ResearchError(
      'template_not_found',
      `${path} has no chat template named "${wanted}" (it has: ${[...named.keys()].join(', ') || 'none'})`,
      { param: 'tokenizer' },
    );
  }
  throw new ResearchError(
    'template_not_found',
    `${path}: "chat_template" must be a string or a list of { name, template }`,
    { param: 'tokenizer' },
  );
}

function specialTokensOf(config: Record<string, unknown>): Record<string, string> {
  const tokens: Record<string, string> = {};
  for (const [key, value] of Object.entries(config)) {
    if (!key.endsWith('_token')) continue;
    // tokenizer_config.json stores tokens either as strings or as AddedToken objects.
    if (typeof value === 'string') tokens[key] = value;
    else if (isRecord(value) && typeof value.content === 'string') tokens[key] = value.content;
  }
  return tokens;
}

function parseJsonObject(
  text: string | undefined,
  path: string,
): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ResearchError(
      'template_not_found',
      `${path} is not valid JSON: ${messageOf(error)}`,
      {
        param: 'tokenizer',
        cause: error,
      },
    );
  }
  if (!isRecord(value)) {
    throw new ResearchError('template_not_found', `${path} must hold a JSON object`, {
      param: 'tokenizer',
    });
  }
  return value;
}
