import { createHash, timingSafeEqual } from 'node:crypto';

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * Checks `Authorization: Bearer <key>` against the configured keys in constant time:
 * keys are compared as SHA-256 digests (equal length whatever the input) and every
 * configured key is compared, so timing reveals neither a key's length nor which matched.
 */
export function createKeyChecker(
  keys: readonly string[],
): (authorization: string | undefined) => boolean {
  const digests = keys.map(digest);
  return (authorization) => {
    if (authorization === undefined) return false;
    const match = /^Bearer\s+(.+)$/i.exec(authorization.trim());
    if (match === null) return false;
    const presented = digest(match[1]!);
    let ok = false;
    for (const expected of digests) ok = timingSafeEqual(presented, expected) || ok;
    return ok;
  };
}
