/**
 * `corsOrigins`: a browser page on an allowed origin may call `/v1/*` (the seed allowed
 * every origin), others get no CORS header. Checked through `app.request()`, through a real
 * socket (where answers and streams are written straight to Node's response), and in
 * Debian's headless Chromium, which enforces CORS for real.
 */
import { existsSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { createProxyApp, parseCorsOrigin, startProxyServer } from '../src/index.js';
import { addFakeWorkers } from './harness.js';
import { createStaticPool, deploymentView } from './static-pool.js';

const NOTEBOOK = 'http://notebook.example:8888';
const OTHER = 'https://evil.example';
const KEY = 'sk-cors';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function proxyApp(corsOrigins: string[] | undefined, apiKeys: string[] = [KEY]) {
  const pool = createStaticPool([deploymentView('llama')]);
  await addFakeWorkers(pool, 'llama', 1, cleanups);
  const app = createProxyApp({ pool, apiKeys, ...(corsOrigins ? { corsOrigins } : {}) });
  cleanups.push(() => app.close());
  return app;
}

async function serve(corsOrigins: string[] | undefined, apiKeys: string[] = [KEY]) {
  const app = await proxyApp(corsOrigins, apiKeys);
  const server = await startProxyServer({ fetch: app.fetch });
  cleanups.push(() => server.close(0));
  return server.url;
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP request with exactly these headers (fetch would add or refuse some). */
function raw(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (chunk: Buffer) => parts.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(parts).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const chat = (stream: boolean) =>
  JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], stream });
const preflightHeaders = (origin: string) => ({
  origin,
  'access-control-request-method': 'POST',
  'access-control-request-headers': 'authorization, content-type, x-stainless-os',
});
const post = (origin: string | undefined, key = KEY) => ({
  ...(origin === undefined ? {} : { origin }),
  authorization: `Bearer ${key}`,
  'content-type': 'application/json',
});

describe('parseCorsOrigin', () => {
  it.each([
    ['*', '*'],
    ['https://notebook.example.org', 'https://notebook.example.org'],
    ['HTTPS://Notebook.Example.org:443', 'https://notebook.example.org'],
    ['http://localhost:8888', 'http://localhost:8888'],
    [' http://127.0.0.1:80 ', 'http://127.0.0.1'],
  ])('%j → %s', (input, origin) => {
    expect(parseCorsOrigin(input)).toBe(origin);
  });

  it.each([
    'notebook.example.org',
    'https://notebook.example.org/',
    'https://notebook.example.org/lab',
    'https://notebook.example.org?x=1',
    'https://user:pw@notebook.example.org',
    'file:///home/me/index.html',
    'null',
    '',
  ])('refuses %j, naming the fix', (input) => {
    expect(() => parseCorsOrigin(input)).toThrow(
      /is not an origin: pass scheme:\/\/host\[:port\] without a path, e\.g\. https:\/\/notebook\.example\.org/,
    );
  });

  it('createProxyApp refuses a bad origin', () => {
    expect(() =>
      createProxyApp({ pool: createStaticPool([]), corsOrigins: ['https://a.example/path'] }),
    ).toThrow(RangeError);
  });
});

describe('CORS through app.request()', () => {
  it('answers a preflight from an allowed origin before the key check, allowing Authorization and Content-Type', async () => {
    const app = await proxyApp([NOTEBOOK, 'https://other.example']);
    const res = await app.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: preflightHeaders(NOTEBOOK),
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe(NOTEBOOK);
    expect(res.headers.get('access-control-allow-methods')).toBe('GET, POST, OPTIONS');
    const allowed = res.headers
      .get('access-control-allow-headers')
      ?.split(',')
      .map((h) => h.trim());
    expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type']));
    // The openai client's own headers, asked for by the page, are allowed too.
    expect(allowed).toContain('x-stainless-os');
    expect(res.headers.get('access-control-max-age')).toBe('600');
    expect(res.headers.get('vary')).toMatch(/origin/);
  });

  it('gives a preflight from another origin no CORS header', async () => {
    const app = await proxyApp([NOTEBOOK]);
    const res = await app.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: preflightHeaders(OTHER),
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(res.headers.get('access-control-allow-headers')).toBeNull();
  });

  it('puts the header on answers, streams and errors for an allowed origin only', async () => {
    const app = await proxyApp([NOTEBOOK]);
    for (const stream of [false, true]) {
      const res = await app.request('/v1/chat/completions', {
        method: 'POST',
        headers: post(NOTEBOOK),
        body: chat(stream),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('access-control-allow-origin')).toBe(NOTEBOOK);
      expect(res.headers.get('access-control-expose-headers')).toContain('x-request-id');
      expect(res.headers.get('vary')).toMatch(/origin/i);
      expect(await res.text()).toContain('t0');
    }
    const denied = await app.request('/v1/models', { headers: post(NOTEBOOK, 'wrong') });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('access-control-allow-origin')).toBe(NOTEBOOK);
    const other = await app.request('/v1/chat/completions', {
      method: 'POST',
      headers: post(OTHER),
      body: chat(true),
    });
    expect(other.status).toBe(200);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    await other.text();
  });

  it('is off by default: no preflight answer, no header', async () => {
    const app = await proxyApp(undefined);
    const preflight = await app.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: preflightHeaders(NOTEBOOK),
    });
    expect(preflight.status).toBe(401);
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    const res = await app.request('/v1/chat/completions', {
      method: 'POST',
      headers: post(NOTEBOOK),
      body: chat(false),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('CORS through a real socket (answers written straight to Node)', () => {
  it('allowed origin: preflight, answer, stream, model list and error all carry it', async () => {
    const url = await serve([NOTEBOOK]);
    const preflight = await raw(
      `${url}/v1/chat/completions`,
      'OPTIONS',
      preflightHeaders(NOTEBOOK),
    );
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe(NOTEBOOK);
    expect(preflight.headers['access-control-allow-headers']).toMatch(
      /authorization, content-type/,
    );
    for (const stream of [false, true]) {
      const res = await raw(`${url}/v1/chat/completions`, 'POST', post(NOTEBOOK), chat(stream));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(
        stream ? /text\/event-stream/ : /application\/json/,
      );
      expect(res.headers['access-control-allow-origin']).toBe(NOTEBOOK);
      expect(res.headers['access-control-expose-headers']).toContain('x-request-id');
      expect(res.headers.vary).toMatch(/origin/i);
      expect(res.body).toContain('t2');
    }
    const models = await raw(`${url}/v1/models`, 'GET', post(NOTEBOOK));
    expect(models.status).toBe(200);
    expect(models.headers['access-control-allow-origin']).toBe(NOTEBOOK);
    const unknown = await raw(
      `${url}/v1/chat/completions`,
      'POST',
      post(NOTEBOOK),
      '{"model":"x"}',
    );
    expect(unknown.status).toBe(404);
    expect(unknown.headers['access-control-allow-origin']).toBe(NOTEBOOK);
    const denied = await raw(`${url}/v1/models`, 'GET', post(NOTEBOOK, 'wrong'));
    expect(denied.status).toBe(401);
    expect(denied.headers['access-control-allow-origin']).toBe(NOTEBOOK);
  });

  it('another origin, or no origin: nothing', async () => {
    const url = await serve([NOTEBOOK]);
    for (const origin of [OTHER, undefined]) {
      for (const stream of [false, true]) {
        const res = await raw(`${url}/v1/chat/completions`, 'POST', post(origin), chat(stream));
        expect(res.status).toBe(200);
        expect(res.headers['access-control-allow-origin']).toBeUndefined();
        expect(res.headers['access-control-expose-headers']).toBeUndefined();
      }
    }
  });

  it('`*`: every origin, streams included, and no Vary', async () => {
    const url = await serve(['*']);
    const preflight = await raw(`${url}/v1/completions`, 'OPTIONS', preflightHeaders(OTHER));
    expect(preflight.headers['access-control-allow-origin']).toBe('*');
    const res = await raw(`${url}/v1/chat/completions`, 'POST', post(OTHER), chat(true));
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(res.headers.vary).toBeUndefined();
  });

  it('default off: a streamed answer to a page carries no CORS header', async () => {
    const url = await serve(undefined, []);
    const res = await raw(`${url}/v1/chat/completions`, 'POST', post(NOTEBOOK), chat(true));
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });
});

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

describe('CORS in headless Chromium', () => {
  let browser: Browser;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} missing: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    }
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  /** A page server on 127.0.0.1: each one is an origin of its own (its port). */
  async function pageOrigin(): Promise<string> {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>nb</title>');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** From a page on `origin`: a streamed chat with the key, read to its end (or the error). */
  async function streamFrom(origin: string, api: string): Promise<string> {
    const page = await browser.newPage();
    try {
      await page.goto(origin);
      return await page.evaluate(
        async ({ api, key }) => {
          try {
            const res = await fetch(`${api}/v1/chat/completions`, {
              method: 'POST',
              headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
              body: JSON.stringify({
                model: 'llama',
                messages: [{ role: 'user', content: 'hi' }],
                stream: true,
              }),
            });
            return `${res.status} ${res.headers.get('x-request-id') === null ? 'no-id' : 'id'} ${await res.text()}`;
          } catch (error) {
            return `blocked: ${String(error)}`;
          }
        },
        { api, key: KEY },
      );
    } finally {
      await page.close();
    }
  }

  it('a notebook page on the allowed origin streams a chat; a page on another origin is blocked', async () => {
    const notebook = await pageOrigin();
    const other = await pageOrigin();
    const api = await serve([notebook]);
    const allowed = await streamFrom(notebook, api);
    expect(allowed).toMatch(/^200 id data: /);
    expect(allowed).toContain('[DONE]');
    expect(await streamFrom(other, api)).toMatch(/^blocked: TypeError: Failed to fetch/);
  });

  it('is blocked everywhere with CORS off (the default)', async () => {
    const notebook = await pageOrigin();
    const api = await serve(undefined);
    expect(await streamFrom(notebook, api)).toMatch(/^blocked: TypeError: Failed to fetch/);
  });
});
