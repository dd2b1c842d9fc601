/**
 * Signed admin requests and answers: what `es` sends instead of the admin key, and how it
 * knows the answer comes from a scheduler that holds the same key. The signatures are the
 * worker protocol's (`@es/protocol`: an HMAC-SHA256 over the method, the path with its query,
 * a timestamp, a fresh nonce and the body's SHA-256; the answer's over the request's nonce,
 * the status and the answer's body), keyed by the admin key instead of the worker key, so
 * this file only words the refusals for admin requests. Nothing that crosses the wire can be
 * used again: the nonce is refused a second time, the timestamp outside its window and
 * before the scheduler started.
 */
import {
  WORKER_SIGNATURE_HEADERS,
  WORKER_SIGNATURE_WINDOW_MS,
  createWorkerRequestVerifier,
  isSignedWorkerAnswer,
  signWorkerAnswer,
  signWorkerRequest,
} from '@es/protocol';

/** The headers of a signed admin request and of its signed answer (the worker protocol's). */
export const ADMIN_SIGNATURE_HEADERS = {
  /** Milliseconds since the epoch when the request was signed. */
  timestamp: WORKER_SIGNATURE_HEADERS.timestamp,
  /** 32 hex digits, never sent twice. */
  nonce: WORKER_SIGNATURE_HEADERS.nonce,
  /** HMAC-SHA256 (hex) of the request, keyed by the admin key. */
  signature: WORKER_SIGNATURE_HEADERS.signature,
  /** HMAC-SHA256 (hex) of the answer, keyed by the admin key (same header as requests). */
  answer: WORKER_SIGNATURE_HEADERS.signature,
} as const;

/** How far a signed admin request's timestamp may be from the scheduler's clock (±30 s). */
export const ADMIN_SIGNATURE_WINDOW_MS = WORKER_SIGNATURE_WINDOW_MS;

/** What a request signature covers. */
export interface AdminRequestParts {
  method: string;
  /** Path and query, as sent (`/api/v1/admin/logs/12?bytes=100`). */
  path: string;
  timestamp: number;
  nonce: string;
  body: Uint8Array | string;
  /** The port it was signed for (`x-es-audience`), if any. */
  audience?: string | undefined;
}

/** The HMAC of a request under `adminKey` (hex). */
export function adminRequestSignature(adminKey: string, parts: AdminRequestParts): string {
  const headers = signWorkerRequest(
    adminKey,
    { method: parts.method, path: parts.path, body: parts.body, audience: parts.audience },
    { now: parts.timestamp, nonce: parts.nonce },
  );
  return headers[WORKER_SIGNATURE_HEADERS.signature] ?? '';
}

/**
 * The headers that sign one request: a fresh nonce, the timestamp `now` and the signature.
 * @example
 * const headers = signAdminRequest(key, { method: 'POST', path: '/api/v1/admin/stop', body: '{}' });
 */
export function signAdminRequest(
  adminKey: string,
  request: {
    method: string;
    path: string;
    body: Uint8Array | string;
    now?: number;
    /** The scheduler's port as this client addresses it (its URL's port). */
    port?: number | undefined;
  },
): Record<string, string> {
  const { method, path, body, port } = request;
  return signWorkerRequest(
    adminKey,
    { method, path, body, ...(port === undefined ? {} : { audience: String(port) }) },
    request.now === undefined ? {} : { now: request.now },
  );
}

/** The HMAC (hex) of an answer to the request that carried `nonce`. */
export function adminAnswerSignature(
  adminKey: string,
  answer: { nonce: string; status: number; body: Uint8Array | string },
): string {
  return signWorkerAnswer(adminKey, answer);
}

/** Whether `signature` signs this answer with `adminKey` (constant time). */
export function isSignedAdminAnswer(
  adminKey: string,
  answer: { nonce: string; status: number; body: Uint8Array | string },
  signature: string | null | undefined,
): boolean {
  return isSignedWorkerAnswer(adminKey, answer, signature);
}

/** A signed admin request as {@link AdminRequestVerifier} reads it. */
export interface SignedAdminRequest {
  method: string;
  /** Path and query. */
  path: string;
  body: Uint8Array | string;
  header(name: string): string | undefined;
}

/** The verdict on one signed admin request; a refusal names the header at fault. */
export type AdminRequestCheck =
  { ok: true; nonce: string } | { ok: false; status: 401 | 503; param: string; message: string };

/** Checks signed admin requests; an accepted nonce is remembered, so a request passes once. */
export interface AdminRequestVerifier {
  verify(request: SignedAdminRequest): AdminRequestCheck;
}

/**
 * The scheduler's check of signed admin requests (the worker protocol's verifier under the
 * admin key): a valid signature, a timestamp within ±30 s and not before `startedAt`, a
 * nonce not seen before.
 */
export function createAdminRequestVerifier(options: {
  adminKey: string;
  now: () => number;
  startedAt: number;
  /** The ports a request must be signed for (undefined: any). */
  audiences?: () => readonly string[];
}): AdminRequestVerifier {
  const { now, startedAt, audiences } = options;
  const verifier = createWorkerRequestVerifier({
    key: options.adminKey,
    now,
    startedAt,
    ...(audiences === undefined ? {} : { audiences }),
  });
  const window = ADMIN_SIGNATURE_WINDOW_MS / 1000;
  return {
    verify(request) {
      const check = verifier.verify(request);
      if (check.ok) return check;
      const { status, param } = check;
      const refuse = (message: string): AdminRequestCheck => ({
        ok: false,
        status,
        param,
        message,
      });
      if (check.code === 'replayed') {
        return refuse(
          'this signed request was already used (a replay): each request needs a new nonce',
        );
      }
      if (check.code === 'busy') return refuse(`${check.message} (signed admin requests)`);
      if (check.code === 'wrong_audience') {
        return refuse(
          `${check.message}; es signs for the port of the URL it is given (--url, the scheduler-url file): an SSH tunnel must keep the scheduler's port number`,
        );
      }
      if (check.code === 'stale') {
        const signedAt = Number(request.header(ADMIN_SIGNATURE_HEADERS.timestamp));
        const at = now();
        if (signedAt > at + ADMIN_SIGNATURE_WINDOW_MS) {
          return refuse(
            `the signed request is dated ${Math.round((signedAt - at) / 1000)} s in the future: check the clocks (NTP)`,
          );
        }
        if (signedAt < at - ADMIN_SIGNATURE_WINDOW_MS) {
          return refuse(
            `the signed request is older than ${window} s (a replay, or this machine's clock is behind): sign a new one`,
          );
        }
        return refuse(
          'the signed request was made before this scheduler started (a replay of a recorded request): sign a new one',
        );
      }
      if (param === ADMIN_SIGNATURE_HEADERS.signature) {
        return refuse(
          'the request signature does not match: signed with another key (another scheduler’s secret?), or changed on the way',
        );
      }
      return refuse(
        `${param} is missing or malformed: sign admin requests as es does (signAdminRequest of @es/client)`,
      );
    },
  };
}
