import { createHash, timingSafeEqual } from 'node:crypto';
import {
  ADMIN_SIGNATURE_HEADERS,
  adminAnswerSignature,
  adminRequestSignature,
  signaturesMatch,
} from '@es/client';

const digest = (value: string) => createHash('sha256').update(value).digest();

/** Constant-time comparison of a presented key with the admin key (hashes equalise lengths). */
export function keyMatches(presented: string | undefined, adminKey: string): boolean {
  if (presented === undefined || presented === '') return false;
  return timingSafeEqual(digest(presented), digest(adminKey));
}

/** The bearer token of an `Authorization` header. */
export function bearer(header: string | undefined | null): string | undefined {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? '');
  return match?.[1]?.trim();
}

/** How long a signed request stays valid after its timestamp (and how early it may be). */
export const SIGNATURE_WINDOW_MS = 30_000;
const CLOCK_AHEAD_MS = 5_000;
/** Nonces of the last window kept; past this many the scheduler refuses (503) rather than grow. */
const MAX_NONCES = 100_000;

/** What {@link AdminAuth.check} found. */
export type AdminAuthResult =
  | { ok: true; how: 'open' | 'bearer'; nonce?: undefined }
  | { ok: true; how: 'signed'; nonce: string }
  | { ok: false; status: 401 | 503; message: string; param: string | null };

/** The admin key's two forms on the wire: a signed request (es), or the bearer key (curl). */
export interface AdminAuth {
  /** Whether `request` (whose body is `body`) proves the admin key. */
  check(request: Request, body: Uint8Array): AdminAuthResult;
  /** The answer signature of a signed request's answer. */
  signAnswer(nonce: string, status: number, body: Uint8Array): string;
}

/**
 * Verify admin requests under `adminKey`: `Authorization: Bearer <admin key>`, or a request
 * signed as `signAdminRequest` signs it, within {@link SIGNATURE_WINDOW_MS} of its timestamp,
 * not before `startedAt` (a request recorded while another process held the port, or before a
 * restart, is refused) and with a nonce not seen before. Unset `adminKey`: everything passes.
 */
export function createAdminAuth(options: {
  adminKey: string | undefined;
  now: () => number;
  startedAt: number;
}): AdminAuth {
  const { adminKey, now, startedAt } = options;
  const nonces = new Map<string, number>();
  const refuse = (message: string, param: string | null = null): AdminAuthResult => ({
    ok: false,
    status: 401,
    message,
    param,
  });
  const forget = (at: number) => {
    for (const [nonce, until] of nonces) {
      if (until > at) break;
      nonces.delete(nonce);
    }
  };
  return {
    check(request, body) {
      if (adminKey === undefined) return { ok: true, how: 'open' };
      const headers = request.headers;
      if (keyMatches(bearer(headers.get('authorization')), adminKey)) {
        return { ok: true, how: 'bearer' };
      }
      const signature = headers.get(ADMIN_SIGNATURE_HEADERS.signature);
      if (signature === null) {
        return refuse(
          'admin key required: send Authorization: Bearer <admin key>, or sign the request (es does: --admin-key-file, ES_ADMIN_KEY or --secret-file)',
        );
      }
      const nonce = headers.get(ADMIN_SIGNATURE_HEADERS.nonce) ?? '';
      const timestamp = Number(headers.get(ADMIN_SIGNATURE_HEADERS.timestamp));
      if (!/^[0-9a-f]{32}$/.test(nonce)) {
        return refuse(
          `${ADMIN_SIGNATURE_HEADERS.nonce} must be 32 hex digits`,
          ADMIN_SIGNATURE_HEADERS.nonce,
        );
      }
      const { pathname, search } = new URL(request.url);
      const expected = adminRequestSignature(adminKey, {
        method: request.method,
        path: `${pathname}${search}`,
        timestamp,
        nonce,
        body,
      });
      if (!signaturesMatch(signature, expected)) {
        return refuse(
          'the request signature does not match: signed with another key (another scheduler’s secret?), or changed on the way',
          ADMIN_SIGNATURE_HEADERS.signature,
        );
      }
      const at = now();
      if (!Number.isFinite(timestamp) || timestamp < at - SIGNATURE_WINDOW_MS) {
        return refuse(
          `the signed request is older than ${SIGNATURE_WINDOW_MS / 1000} s (a replay, or this machine's clock is behind): sign a new one`,
          ADMIN_SIGNATURE_HEADERS.timestamp,
        );
      }
      if (timestamp > at + CLOCK_AHEAD_MS) {
        return refuse(
          `the signed request is dated ${Math.round((timestamp - at) / 1000)} s in the future: check the clocks (NTP)`,
          ADMIN_SIGNATURE_HEADERS.timestamp,
        );
      }
      if (timestamp < startedAt) {
        return refuse(
          'the signed request was made before this scheduler started (a replay of a recorded request): sign a new one',
          ADMIN_SIGNATURE_HEADERS.timestamp,
        );
      }
      forget(at);
      if (nonces.has(nonce)) {
        return refuse(
          'this signed request was already used (a replay): each request needs a new nonce',
          ADMIN_SIGNATURE_HEADERS.nonce,
        );
      }
      if (nonces.size >= MAX_NONCES) {
        return {
          ok: false,
          status: 503,
          message: `more than ${MAX_NONCES} signed admin requests in ${SIGNATURE_WINDOW_MS / 1000} s: try again shortly`,
          param: null,
        };
      }
      nonces.set(nonce, at + SIGNATURE_WINDOW_MS);
      return { ok: true, how: 'signed', nonce };
    },
    signAnswer: (nonce, status, body) =>
      adminAnswerSignature(adminKey ?? '', { nonce, status, body }),
  };
}
