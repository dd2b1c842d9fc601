import type { Context, MiddlewareHandler } from 'hono';
import type { ProxyEnv } from './app.js';

/** Request headers a browser page may send to `/v1/*`, besides the ones it asks for. */
const ALLOW_HEADERS = 'authorization, content-type, x-request-id';
/** Response headers a page may read besides the CORS-safelisted ones. */
const EXPOSE_HEADERS = 'x-request-id, retry-after';
/** Seconds a browser may cache a preflight answer. */
const MAX_AGE = '600';

/**
 * The origin as browsers send it in `Origin` (`https://notebook.example.org`, `*` for any
 * origin): scheme and host lower-cased, a default port dropped.
 * @throws {RangeError} naming the value and the fix when it is not an origin (a path, a query,
 * credentials, a scheme other than http and https).
 * @example
 * parseCorsOrigin('https://Notebook.example.org:443'); // 'https://notebook.example.org'
 */
export function parseCorsOrigin(value: string): string {
  const text = value.trim();
  if (text === '*') return '*';
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (
    url === undefined ||
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.username !== '' ||
    url.password !== '' ||
    url.search !== '' ||
    url.hash !== '' ||
    url.pathname !== '/' ||
    // new URL() accepts 'http://host/' and 'http://host'; a path, even '/', is not an origin.
    text.replace(/^[a-z]+:\/\/[^/]*/i, '') !== ''
  ) {
    throw new RangeError(
      `CORS origin ${JSON.stringify(value)} is not an origin: pass scheme://host[:port] ` +
        `without a path, e.g. https://notebook.example.org or http://localhost:8888, or * for any origin`,
    );
  }
  return url.origin;
}

/**
 * CORS for `/v1/*` (browser pages on the allowed origins may call the API): preflights are
 * answered here, before authentication (a browser sends them without the key); every other
 * response to an allowed origin carries `Access-Control-Allow-Origin`.
 *
 * Not hono's `cors()`: it sets its headers on `c.res`, and the proxy writes upstream answers
 * and streams straight to Node's `ServerResponse`, past `c.res`. On that path the headers go
 * onto the `ServerResponse` before the handler runs, and Node merges them into whatever
 * `writeHead` sends later (the proxy's own answers and errors included).
 * @param origins parsed origins ({@link parseCorsOrigin}); `*` allows every origin.
 * @param header reads one request header (lower-case name).
 */
export function corsMiddleware(
  origins: readonly string[],
  header: (c: Context<ProxyEnv>, name: string) => string | undefined,
): MiddlewareHandler<ProxyEnv> {
  const anyOrigin = origins.includes('*');
  const allowed = new Set(origins);
  // With a list, the answer depends on Origin: caches must keep one copy per origin.
  const vary = anyOrigin ? undefined : 'origin';
  const allowOrigin = (origin: string | undefined): string | undefined =>
    origin === undefined ? undefined : anyOrigin ? '*' : allowed.has(origin) ? origin : undefined;

  return async (c, next) => {
    const origin = header(c, 'origin');
    const allow = allowOrigin(origin);
    if (c.req.method === 'OPTIONS' && origin !== undefined) {
      const requested = header(c, 'access-control-request-headers');
      const headers = new Headers({ vary: 'origin, access-control-request-headers' });
      if (allow !== undefined) {
        headers.set('access-control-allow-origin', allow);
        headers.set('access-control-allow-methods', 'GET, POST, OPTIONS');
        // The openai client adds its own headers (x-stainless-*): what the page asks for
        // is allowed, the origin being the gate.
        headers.set(
          'access-control-allow-headers',
          requested === undefined || requested.trim() === ''
            ? ALLOW_HEADERS
            : `${ALLOW_HEADERS}, ${requested}`,
        );
        headers.set('access-control-max-age', MAX_AGE);
      }
      return new Response(null, { status: 204, headers });
    }
    const outgoing = c.env?.outgoing;
    if (outgoing !== undefined) {
      if (allow !== undefined) {
        outgoing.setHeader('access-control-allow-origin', allow);
        outgoing.setHeader('access-control-expose-headers', EXPOSE_HEADERS);
      }
      if (vary !== undefined && origin !== undefined) outgoing.setHeader('vary', vary);
      await next();
      return;
    }
    await next();
    if (allow !== undefined) {
      c.res.headers.set('access-control-allow-origin', allow);
      c.res.headers.set('access-control-expose-headers', EXPOSE_HEADERS);
    }
    if (vary !== undefined && origin !== undefined) c.res.headers.append('vary', vary);
  };
}
