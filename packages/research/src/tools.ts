/**
 * The research tools the model can call: web search through the Serper API and URL reading
 * through the Jina reader (or, without a Jina key, by fetching the page directly). A tool
 * either returns text for the model or throws; the agent
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
  /**
   * `JINA_API_KEY`. Without it `open_url` fetches the page itself (as the original tool
   * did) and turns its HTML into text, instead of calling the reader.
   */
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
          'tool_failed',
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
        description: 'Read a web page. Returns its main content as text.',
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
          'tool_failed',
          `"url" must be an absolute http(s) URL, got "${url}"`,
        );
      }
      const attempt = signal ? { ...retry, signal } : retry;
      let text: string;
      if (options.jinaApiKey) {
        const response = await fetchWithRetry(
          `${jinaBase}/${url}`,
          {
            headers: {
              accept: 'text/plain',
              authorization: `Bearer ${options.jinaApiKey}`,
              'x-return-format': 'text',
            },
          },
          attempt,
        );
        text = (await response.text()).trim();
      } else {
        text = await fetchPageText(url, attempt);
      }
      return truncate(text === '' ? `(${url} has no readable text)` : text, maxChars);
    },
  };

  return [search, openUrl];
}

/** The most of a page `open_url` reads without the reader (bigger bodies are cut). */
const MAX_PAGE_BYTES = 5 * 1024 * 1024;

/** Fetches a page directly and returns its text: HTML as text, text types as they are. */
async function fetchPageText(url: string, retry: RetryOptions): Promise<string> {
  const response = await fetchWithRetry(
    url,
    {
      headers: {
        accept: 'text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5',
        'user-agent': 'Mozilla/5.0 (compatible; elastic-serving-research/0.1)',
      },
      redirect: 'follow',
    },
    retry,
  );
  const type = (response.headers.get('content-type') ?? '').toLowerCase();
  const readable = type === '' || type.startsWith('text/') || /json|xml|javascript/.test(type);
  if (!readable) {
    await response.body?.cancel();
    throw new ResearchError(
      'tool_failed',
      `${url} is ${type.split(';')[0]}, which cannot be read without the Jina reader ` +
        `(JINA_API_KEY is not set)`,
    );
  }
  const body = await readCapped(response, MAX_PAGE_BYTES);
  return /html|xml/.test(type) || /^\s*<(!doctype|html)/i.test(body)
    ? htmlToText(body)
    : body.trim();
}

async function readCapped(response: Response, maxBytes: number): Promise<string> {
  if (response.body === null) return '';
  const decoder = new TextDecoder();
  let text = '';
  let bytes = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    bytes += chunk.byteLength;
    text += decoder.decode(chunk, { stream: true });
    if (bytes >= maxBytes) break;
  }
  return text + decoder.decode();
}

const ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  mdash: '\u2014',
  ndash: '\u2013',
  hellip: '\u2026',
  copy: '\u00a9',
};

/**
 * Turns an HTML page into readable text for the model: the title first, scripts, styles and
 * comments dropped, block elements on lines of their own, entities decoded, blank runs
 * collapsed. Pure; not a full HTML parser, but enough for articles and documentation.
 */
export function htmlToText(html: string): string {
  const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html)?.[1];
  const body = html
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/<(script|style|noscript|template|svg|head)\b[\s\S]*?<\/\1\s*>/gi, '')
    .replace(/<br\s*\/?>/gi, '\n')
    .replace(/<li\b[^>]*>/gi, '\n- ')
    .replace(
      /<\/?(p|div|section|article|main|header|footer|nav|aside|h[1-6]|ul|ol|table|tr|pre|blockquote|figure|form)\b[^>]*>/gi,
      '\n',
    )
    .replace(/<\/t[dh]\s*>/gi, '\t')
    .replace(/<[^>]+>/g, '');
  const text = decodeEntities(body)
    .split('\n')
    .map((line) => line.replace(/[ \t\u00a0]+/g, ' ').trim())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
  const heading = title === undefined ? '' : decodeEntities(title).replace(/\s+/g, ' ').trim();
  return heading !== '' && !text.startsWith(heading) ? `# ${heading}\n\n${text}` : text;
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name: string) => {
    if (name.startsWith('#')) {
      const code =
        name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : Number(name.slice(1));
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff
        ? String.fromCodePoint(code)
        : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
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
    throw new ResearchError('tool_failed', `missing argument "${key}" (a non-empty string)`);
  }
  return value.trim();
}

function stringOr(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value : fallback;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}
