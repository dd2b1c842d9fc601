import {
  ADMIN_SIGNATURE_HEADERS,
  ADMIN_SIGNATURE_WINDOW_MS,
  adminAnswerSignature,
  createAdminRequestVerifier,
} from '@es/client';
import { createBearerCheck } from '@es/protocol';

/** How far a signed request's timestamp may be from this clock, either way (±30 s). */
export const SIGNATURE_WINDOW_MS = ADMIN_SIGNATURE_WINDOW_MS;

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
 * signed as `signAdminRequest` signs it (the worker protocol's signature under the admin
 * key), within {@link SIGNATURE_WINDOW_MS} of its timestamp, not before `startedAt` (a
 * request recorded while another process held the port, or before a restart, is refused)
 * and with a nonce not seen before. Unset `adminKey`: everything passes.
 */
export function createAdminAuth(options: {
  adminKey: string | undefined;
  now: () => number;
  startedAt: number;
  /** The ports a signed request must be signed for (see `MountAdminOptions.ports`). */
  audiences?: () => readonly string[];
}): AdminAuth {
  const { adminKey, now, startedAt, audiences } = options;
  const bearerOk = createBearerCheck(adminKey === undefined ? [] : [adminKey]);
  const verifier =
    adminKey === undefined
      ? undefined
      : createAdminRequestVerifier({
          adminKey,
          now,
          startedAt,
          ...(audiences === undefined ? {} : { audiences }),
        });
  return {
    check(request, body) {
      if (adminKey === undefined || verifier === undefined) return { ok: true, how: 'open' };
      const headers = request.headers;
      if (bearerOk(headers.get('authorization'))) {
        return { ok: true, how: 'bearer' };
      }
      if (!headers.has(ADMIN_SIGNATURE_HEADERS.signature)) {
        return {
          ok: false,
          status: 401,
          param: null,
          message:
            'admin key required: send Authorization: Bearer <admin key>, or sign the request (es does: --admin-key-file, ES_ADMIN_KEY or --secret-file)',
        };
      }
      const { pathname, search } = new URL(request.url);
      const check = verifier.verify({
        method: request.method,
        path: `${pathname}${search}`,
        body,
        header: (name) => headers.get(name) ?? undefined,
      });
      return check.ok ? { ok: true, how: 'signed', nonce: check.nonce } : { ...check };
    },
    signAnswer: (nonce, status, body) =>
      adminAnswerSignature(adminKey ?? '', { nonce, status, body }),
  };
}
