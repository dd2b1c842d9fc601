/**
 * The research tools the model can call: web search through the Serper API and URL reading
 * through the Jina reader. A tool either returns text for the model or throws; the agent
 * loop turns a throw into a tool message, so a failing tool never ends a trajectory.
 */
import { ResearchError } from './errors.js';
import { fetchWithRetry } from './http.js';
import type { RetryOptions } from './http.js';
import type { ToolDefinition } from './types.js';
import { isRecord } from './util.js';

/** A function the model can call. */
export interface Tool {
  definition: ToolDefinition;
  /** Runs the tool with already-parsed arguments; returns text for the model. */
  run(args: Record<string, unknown>, signal?: AbortSignal): Promise<string>;
}

/** Options of {@link createWebTools}. */
export interface WebToolsOptions {
  /** `SERPER_API_KEY`. Without it `search` answers the model with an error. */
  serperApiKey?: string;
  /** Default `https://google.serper.dev` (the tool POSTs to `<base>/search`). */
  serperBaseUrl?: string;
  /** `JINA_API_KEY`. Optional: the reader also works, rate-limited, without a key. */
  jinaApiKey?: string;
  /** Default `https://r.jina.ai` (the tool GETs `<base>/<url>`). */
  jinaBaseUrl?: string;
  /** Results per search, default 10. */
  searchResults?: number;
  /** Longest tool result in characters; longer results are cut with a note. Default 20000. */
  maxResultChars?: number;
  /** Per-attempt timeout, default 30000 ms. */
  timeoutMs?: number;
  /** Retries on network errors, timeouts, 429 and 5xx; default 3. */
  maxRetries?: number;
  /** First backoff delay, default 500 ms. */
  retryBaseMs?: number;
  fetch?: typeof fetch;
}

/** Default base URLs of the tools' APIs. */
export const DEFAULT_SERPER_BASE_URL = 'https://google.serper.dev';
export const DEFAULT_JINA_BASE_URL = 'https://r.jina.ai';

/**
 * Creates the `search` and `open_url` tools.
 *
 * @example
 * ```ts
 * const tools = createWebTools({ serperApiKey: process.env.SERPER_API_KEY });
 * const text = await tools[0].run({ query: 'H200 memory bandwidth' });
 * ```
 */
export function createWebTools(options: WebToolsOptions = {}): Tool[] {
  const retry: RetryOptions = {
    timeoutMs: options.timeoutMs ?? 30_000,
    maxRetries: options.maxRetries ?? 3,
    retryBaseMs: options.retryBaseMs ?? 500,
  };
  if (options.fetch) retry.fetch = options.fetch;
  const maxChars = options.maxResultChars ?? 20_000;
  const serperBase = trimSlash(options.serperBaseUrl ?? DEFAULT_SERPER_BASE_URL);
  const jinaBase = trimSlash(options.jinaBaseUrl ?? DEFAULT_JINA_BASE_URL);
  const searchResults = options.searchResults ?? 10;

  const search: Tool = {
    definition: {
      type: 'function',
      function: {
        name: 'search',
        description:
          'Search the web. Returns the top results with title, URL and snippet; open a URL with open_url to read it.',
        parameters: {
          type: 'object',
          properties: { query: { type: 'string', description: 'The search query.' } },
          required: ['query'],
        },
      },
    },
    async run(args, signal) {
      const query = requireString(args, 'query');
      if (!options.serperApiKey) {
        throw new ResearchError(
          'TOOL_FAILED',
          'search is not configured (SERPER_API_KEY is not set); answer from what you know or use open_url',
        );
      }
      const response = await fetchWithRetry(
        `${serperBase}/search`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': options.serperApiKey },
          body: JSON.stringify({ q: query, num: searchResults }),
        },
        signal ? { ...retry, signal } : retry,
      );
      const body: unknown = await response.json().catch(() => undefined);
      return truncate(formatSearchResults(query, body), maxChars);
    },
  };

  const openUrl: Tool = {
    definition: {
      type: 'function',
      function: {
        name: 'open_url',
        description: 'Read a web page. Returns its main content as Markdown text.',
        parameters: {
          type: 'object',
          properties: { url: { type: 'string', description: 'An absolute http(s) URL.' } },
          required: ['url'],
        },
      },
    },
    async run(args, signal) {
      const url = requireString(args, 'url');
      if (!/^https?:\/\/\S+$/i.test(url)) {
        throw new ResearchError(
          'TOOL_FAILED',
          `"url" must be an absolute http(s) URL, got "${url}"`,
        );
      }
      const headers: Record<string, string> = { accept: 'text/plain' };
      if (options.jinaApiKey) headers.authorization = `Bearer ${options.jinaApiKey}`;
      const response = await fetchWithRetry(
        `${jinaBase}/${url}`,
        { headers },
        signal ? { ...retry, signal } : retry,
      );
      const text = (await response.text()).trim();
      return truncate(text === '' ? `(${url} has no readable text)` : text, maxChars);
    },
  };

  return [search, openUrl];
}

/**
 * Cuts `text` to `maxChars` characters and says so, so the model knows the page goes on.
 */
export function truncate(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  return `${text.slice(0, maxChars)}\n\n[truncated: showing ${maxChars} of ${text.length} characters]`;
}

/** Formats a Serper response as a numbered list for the model. Pure. */
export function formatSearchResults(query: string, body: unknown): string {
  const lines: string[] = [];
  if (isRecord(body) && isRecord(body.answerBox)) {
    const box = body.answerBox;
    const answer = [box.answer, box.snippet].find((v) => typeof v === 'string');
    if (typeof answer === 'string') lines.push(`Answer box: ${answer}`, '');
  }
  const organic = isRecord(body) && Array.isArray(body.organic) ? body.organic : [];
  organic.filter(isRecord).forEach((result, index) => {
    lines.push(`[${index + 1}] ${stringOr(result.title, '(untitled)')}`);
    if (typeof result.link === 'string') lines.push(`URL: ${result.link}`);
    const snippet = stringOr(result.snippet, '');
    const date = typeof result.date === 'string' ? ` (${result.date})` : '';
    if (snippet || date) lines.push(`${snippet}${date}`.trim());
    lines.push('');
  });
  if (lines.length === 0) return `No results for "${query}".`;
  return [`Search results for "${query}":`, '', ...lines].join('\n').trimEnd();
}

function requireString(args: Record<string, unknown>, key: string): string {
  const value = args[key];
  if (typeof value !== 'string' || value.trim() === '') {
    throw new ResearchError('TOOL_FAILED', `missing argument "${key}" (a non-empty string)`);
  }
  return value.trim();
}

function stringOr(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value : fallback;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}
