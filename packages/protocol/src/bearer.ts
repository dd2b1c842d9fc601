/**
 * The one check of a presented key (an `Authorization: Bearer` header, or a key typed in a
 * form) against configured keys, for every route that takes one: the proxy's client keys,
 * the admin key, an engine front's key. What each route answers on a mismatch (its status,
 * code and message) stays the route's.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

const digest = (value: string) => createHash('sha256').update(value).digest();

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive). */
function bearerToken(authorization: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(.+)$/i.exec((authorization ?? '').trim());
  return match?.[1]?.trim();
}

/**
 * Checks a presented key against `keys` in constant time: keys are compared as SHA-256
 * digests (equal length whatever the input) and every configured key is compared, so
 * timing reveals neither a key's length nor which one matched. An empty or missing key
 * never matches. `hashes` are keys known by their digest only (`clientKeyHash`: hex
 * SHA-256), as a data-plane process receives the client keys; malformed ones never match.
 * @example
 * const check = createKeyCheck([adminKey]);
 * check(form.key); // true for the admin key
 */
export function createKeyCheck(
  keys: readonly string[],
  hashes: readonly string[] = [],
): (presented: string | undefined) => boolean {
  const digests = [
    ...keys.map(digest),
    ...hashes
      .filter((hash) => /^[0-9a-f]{64}$/i.test(hash))
      .map((hash) => Buffer.from(hash, 'hex')),
  ];
  return (presented) => {
    if (presented === undefined || presented === '') return false;
    const given = digest(presented);
    let ok = false;
    for (const expected of digests) ok = timingSafeEqual(given, expected) || ok;
    return ok;
  };
}

/**
 * {@link createKeyCheck} (keys, and keys known by their `hashes`) over the token of an `Authorization: Bearer <key>` header; a
 * missing header, another scheme or an empty token never matches.
 * @example
 * const authorized = createBearerCheck(['sk-1', 'sk-2']);
 * authorized(request.headers.get('authorization'));
 */
export function createBearerCheck(
  keys: readonly string[],
  hashes: readonly string[] = [],
): (authorization: string | null | undefined) => boolean {
  const check = createKeyCheck(keys, hashes);
  return (authorization) => check(bearerToken(authorization));
}
