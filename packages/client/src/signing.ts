/**
 * Signed admin requests and answers: what `es` sends instead of the admin key, and how it
 * knows the answer comes from a scheduler that holds the same key. An HMAC-SHA256 keyed by
 * the admin key over a timestamp, a random nonce, the method, the path with its query and the
 * SHA-256 of the body; the answer's HMAC covers the request's nonce, the status and the
 * answer's body. Nothing that crosses the wire can be used again: the nonce is refused a
 * second time, the timestamp after its window (and before the scheduler started).
 *
 * The same shape as the worker protocol's signatures (`@es/protocol`: same headers, same
 * fields), under the admin key and with prefixes of its own, so that neither signature can
 * pass for the other; its verifier's refusals speak of workers and the worker key, so the
 * admin API checks these with `createAdminAuth` of `@es/admin`.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The headers of a signed admin request and of its signed answer. */
export const ADMIN_SIGNATURE_HEADERS = {
  /** Milliseconds since the epoch when the request was signed. */
  timestamp: 'x-es-timestamp',
  /** 32 hex digits, never sent twice. */
  nonce: 'x-es-nonce',
  /** HMAC-SHA256 (hex) of the request, keyed by the admin key. */
  signature: 'x-es-signature',
  /**
   * HMAC-SHA256 (hex) of the answer, keyed by the admin key: the same header on answers as
   * on requests, as in the worker protocol (`WORKER_SIGNATURE_HEADERS` of `@es/protocol`).
   */
  answer: 'x-es-signature',
} as const;

/** What a request signature covers. */
export interface AdminRequestParts {
  method: string;
  /** Path and query, as sent (`/api/v1/admin/logs/12?bytes=100`). */
  path: string;
  timestamp: number;
  nonce: string;
  body: Uint8Array | string;
}

const sha256 = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string, text: string) => createHmac('sha256', key).update(text).digest('hex');

/** The text a request signature is the HMAC of (its own prefix: it never equals an answer's). */
function requestText(parts: AdminRequestParts): string {
  return [
    'es-admin-request-v1',
    parts.method.toUpperCase(),
    parts.path,
    String(parts.timestamp),
    parts.nonce,
    sha256(parts.body),
  ].join('\n');
}

/** The HMAC of a request under `adminKey` (hex). */
export function adminRequestSignature(adminKey: string, parts: AdminRequestParts): string {
  return hmac(adminKey, requestText(parts));
}

/**
 * The headers that sign one request: a fresh nonce, the timestamp `now()` and the signature.
 * @example
 * const headers = signAdminRequest(key, { method: 'POST', path: '/api/v1/admin/stop', body: '{}' });
 */
export function signAdminRequest(
  adminKey: string,
  request: { method: string; path: string; body: Uint8Array | string; now?: number },
): Record<string, string> {
  const parts: AdminRequestParts = {
    method: request.method,
    path: request.path,
    body: request.body,
    timestamp: request.now ?? Date.now(),
    nonce: randomBytes(16).toString('hex'),
  };
  return {
    [ADMIN_SIGNATURE_HEADERS.timestamp]: String(parts.timestamp),
    [ADMIN_SIGNATURE_HEADERS.nonce]: parts.nonce,
    [ADMIN_SIGNATURE_HEADERS.signature]: adminRequestSignature(adminKey, parts),
  };
}

/** The HMAC (hex) of an answer to the request that carried `nonce`. */
export function adminAnswerSignature(
  adminKey: string,
  answer: { nonce: string; status: number; body: Uint8Array | string },
): string {
  return hmac(
    adminKey,
    ['es-admin-answer-v1', answer.nonce, String(answer.status), sha256(answer.body)].join('\n'),
  );
}

/** Constant-time comparison of two hex signatures; false when either is missing. */
export function signaturesMatch(presented: string | null | undefined, expected: string): boolean {
  if (presented === null || presented === undefined || !/^[0-9a-f]{64}$/.test(presented)) {
    return false;
  }
  return timingSafeEqual(Buffer.from(presented, 'hex'), Buffer.from(expected, 'hex'));
}
