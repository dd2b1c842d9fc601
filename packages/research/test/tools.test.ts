import { afterEach, describe, expect, test } from 'vitest';
import { createWebTools, formatSearchResults, htmlToText, truncate } from '../src/tools.js';
import type { Tool, WebToolsOptions } from '../src/tools.js';
import { defaultAnswer, startFakeTools } from './fake-tools.js';
import type { FakeAnswer, FakeTools, RecordedRequest } from './fake-tools.js';

let fake: FakeTools | undefined;
afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function toolsAgainst(
  respond?: (request: RecordedRequest, index: number) => FakeAnswer,
  options: WebToolsOptions = {},
): Promise<{ search: Tool; openUrl: Tool; fake: FakeTools }> {
  fake = await startFakeTools(respond);
  const [search, openUrl] = createWebTools({
    serperApiKey: 'serper-key',
    jinaApiKey: 'jina-key',
    serperBaseUrl: fake.url,
    jinaBaseUrl: `${fake.url}/`,
    retryBaseMs: 10,
    ...options,
  }) as [Tool, Tool];
  return { search, openUrl, fake };
}

describe('search (Serper)', () => {
  test('POSTs the query with the API key and lists the results for the model', async () => {
    const { search, fake } = await toolsAgainst();
    const text = await search.run({ query: 'PagedAttention' });
    expect(fake.requests).toHaveLength(1);
    const [request] = fake.requests;
    expect(request?.method).toBe('POST');
    expect(request?.path).toBe('/search');
    expect(request?.headers['x-api-key']).toBe('serper-key');
    expect(JSON.parse(request?.body ?? '')).toEqual({ q: 'PagedAttention', num: 10 });
    expect(text).toBe(
      [
        'Search results for "PagedAttention":',
        '',
        '[1] About PagedAttention',
        'URL: https://example.org/a',
        'All about PagedAttention.',
        '',
        '[2] Second',
        'URL: https://example.org/b',
        'More. (2024-05-01)',
      ].join('\n'),
    );
  });

  test('retries 503 and 429 (honouring Retry-After) and then succeeds', async () => {
    const { search, fake } = await toolsAgainst((request, index) => {
      if (index === 0) return { status: 503, body: 'overloaded' };
      if (index === 1) return { status: 429, headers: { 'retry-after': '0' }, body: 'slow down' };
      return defaultAnswer(request);
    });
    await expect(search.run({ query: 'q' })).resolves.toContain('[1] About q');
    expect(fake.requests).toHaveLength(3);
  });

  test('waits the Retry-After of a 429 (1 s) instead of its own 10 ms backoff', async () => {
    const at: number[] = [];
    const { search, fake } = await toolsAgainst((request, index) => {
      at.push(Date.now());
      if (index === 0) return { status: 429, headers: { 'retry-after': '1' }, body: 'slow down' };
      return defaultAnswer(request);
    });
    await expect(search.run({ query: 'q' })).resolves.toContain('[1] About q');
    expect(fake.requests).toHaveLength(2);
    expect((at[1] ?? 0) - (at[0] ?? 0)).toBeGreaterThanOrEqual(950);
  });

  test('gives up after its retries with the status and body in the error', async () => {
    const { search, fake } = await toolsAgainst(() => ({ status: 500, body: 'boom' }), {
      maxRetries: 2,
    });
    await expect(search.run({ query: 'q' })).rejects.toMatchObject({
      code: 'tool_failed',
      status: 500,
      message: expect.stringContaining('answered HTTP 500: boom'),
    });
    expect(fake.requests).toHaveLength(3);
  });

  test('does not retry a client error such as a bad key', async () => {
    const { search, fake } = await toolsAgainst(() => ({ status: 403, body: 'bad key' }));
    await expect(search.run({ query: 'q' })).rejects.toThrow(/HTTP 403: bad key/);
    expect(fake.requests).toHaveLength(1);
  });

  test('does not retry a 400', async () => {
    const { search, fake } = await toolsAgainst(() => ({ status: 400, body: 'bad query' }));
    await expect(search.run({ query: 'q' })).rejects.toMatchObject({
      code: 'tool_failed',
      status: 400,
      message: expect.stringContaining('answered HTTP 400: bad query'),
    });
    expect(fake.requests).toHaveLength(1);
  });

  test('times out each attempt', async () => {
    const { search, fake } = await toolsAgainst(() => ({ delayMs: 2_000, body: '{}' }), {
      timeoutMs: 100,
      maxRetries: 1,
    });
    await expect(search.run({ query: 'q' })).rejects.toThrow(/timed out after 100 ms/);
    expect(fake.requests).toHaveLength(2);
  });

  test('explains a missing key or query without calling out', async () => {
    const { fake } = await toolsAgainst();
    const [search] = createWebTools({ serperBaseUrl: fake.url }) as [Tool];
    await expect(search.run({ query: 'q' })).rejects.toThrow(/SERPER_API_KEY is not set/);
    await expect(search.run({})).rejects.toThrow(/missing argument "query"/);
    expect(fake.requests).toHaveLength(0);
  });
});

describe('open_url (Jina reader)', () => {
  test('GETs <base>/<url> with the bearer key and X-Return-Format: text, and truncates long pages', async () => {
    const long = 'x'.repeat(500);
    const { openUrl, fake } = await toolsAgainst(() => ({ body: long }), { maxResultChars: 100 });
    const text = await openUrl.run({ url: 'https://example.org/page?a=1' });
    expect(fake.requests[0]?.path).toBe('/https://example.org/page?a=1');
    expect(fake.requests[0]?.headers.authorization).toBe('Bearer jina-key');
    expect(fake.requests[0]?.headers['x-return-format']).toBe('text');
    expect(text).toBe(`${'x'.repeat(100)}\n\n[truncated: showing 100 of 500 characters]`);
  });

  test('without a Jina key it fetches the page itself and reads the HTML as text', async () => {
    const jina = await startFakeTools(() => ({ body: 'the reader must not be called' }));
    try {
      const site = await startFakeTools((request) =>
        request.path === '/doc'
          ? {
              headers: { 'content-type': 'text/html; charset=utf-8' },
              body:
                '<!doctype html><html><head><title>PagedAttention &amp; vLLM</title>' +
                '<style>p { color: red }</style><script>alert(1)</script></head><body>' +
                '<h1>PagedAttention</h1><p>Proposed by Kwon&nbsp;et&nbsp;al. in 2023.</p>' +
                '<ul><li>SOSP</li><li>vLLM</li></ul><!-- hidden --></body></html>',
            }
          : { status: 404, body: 'no such page' },
      );
      fake = site;
      const [, openUrl] = createWebTools({ jinaBaseUrl: jina.url, retryBaseMs: 5 }) as [Tool, Tool];
      expect(await openUrl.run({ url: `${site.url}/doc` })).toBe(
        '# PagedAttention & vLLM\n\nPagedAttention\n\nProposed by Kwon et al. in 2023.\n\n- SOSP\n- vLLM',
      );
      await expect(openUrl.run({ url: `${site.url}/missing` })).rejects.toThrow(
        /answered HTTP 404: no such page/,
      );
      expect(site.requests.map((r) => r.path)).toEqual(['/doc', '/missing']);
      expect(jina.requests).toHaveLength(0);
    } finally {
      await jina.close();
    }
  });

  test('without a Jina key a binary page is refused with the reason', async () => {
    const { fake } = await toolsAgainst(() => ({
      headers: { 'content-type': 'application/pdf' },
      body: '%PDF-1.7',
    }));
    const [, openUrl] = createWebTools({ retryBaseMs: 5 }) as [Tool, Tool];
    await expect(openUrl.run({ url: `${fake.url}/paper.pdf` })).rejects.toThrow(
      /is application\/pdf, which cannot be read without the Jina reader \(JINA_API_KEY is not set\)/,
    );
  });

  test('rejects URLs that are not absolute http(s)', async () => {
    const { openUrl, fake } = await toolsAgainst();
    await expect(openUrl.run({ url: 'file:///etc/passwd' })).rejects.toThrow(
      /absolute http\(s\) URL/,
    );
    expect(fake.requests).toHaveLength(0);
  });
});

describe('formatting', () => {
  test('search results: answer box first, a clear line when there are none', () => {
    expect(formatSearchResults('q', { answerBox: { answer: '42' }, organic: [] })).toBe(
      'Search results for "q":\n\nAnswer box: 42',
    );
    expect(formatSearchResults('q', { organic: [] })).toBe('No results for "q".');
    expect(formatSearchResults('q', 'not json')).toBe('No results for "q".');
  });

  test('htmlToText: entities, tables, breaks and blank runs', () => {
    expect(
      htmlToText(
        '<p>a&lt;b &#x41;&#66;</p><br/><table><tr><td>x</td><td>y</td></tr></table>\n\n\n<p>z</p>',
      ),
    ).toBe('a<b AB\n\nx y\n\nz');
  });

  test('truncate leaves short text alone', () => {
    expect(truncate('short', 10)).toBe('short');
  });
});
