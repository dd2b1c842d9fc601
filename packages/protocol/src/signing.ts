/**
 * Signatures of the worker protocol. Both ends know the key derived from the shared secret
 * (`deriveKeys(secret).workerKey`); neither ever sends it. A worker signs each request over
 * its method, path, a timestamp, a fresh nonce and the body's SHA-256; the scheduler refuses
 * a request that is not signed so, not fresh, or seen before, and signs each answer over the
 * request's nonce, the status and the body's SHA-256, so that a worker can tell the
 * scheduler's answers from a squatter's.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The headers that carry a signature (requests: all three; answers: `signature`). */
export const WORKER_SIGNATURE_HEADERS = {
  /** Milliseconds since the epoch on the worker's clock when the request was signed. */
  timestamp: 'x-es-timestamp',
  /** A random value, never used twice (32 hex characters from `signWorkerRequest`). */
  nonce: 'x-es-nonce',
  /** HMAC-SHA256, hex. */
  signature: 'x-es-signature',
  /**
   * The port the request was addressed to, when it is signed for one: a verifier that
   * requires an audience refuses a request signed for another port, so a squatter on a
   * stale address cannot relay what it received to the real server.
   */
  audience: 'x-es-audience',
} as const;

/**
 * How far a request's timestamp may be from the scheduler's clock, either way (ms). A nonce
 * is remembered for as long as its timestamp is inside the window, so a replay inside the
 * window is refused as `replayed` and one after it as `stale`. Clocks of the nodes must agree
 * within this (NTP); a worker whose clock is further off is refused until they do.
 */
export const WORKER_SIGNATURE_WINDOW_MS = 30_000;

/** How many nonces a verifier remembers at most (default of `maxNonces`). */
export const MAX_REMEMBERED_NONCES = 200_000;

/** Why a signed request was refused (the `error.code` of the 401). */
export type WorkerRequestRefusalCode = 'bad_signature' | 'stale' | 'replayed' | 'wrong_audience';

/**
 * The audience a request to `url` is signed for: its port as the client addresses it (the
 * scheme's default when the URL names none).
 * @example
 * audienceOf('http://login1:8781/api/v1/workers/register'); // '8781'
 */
export function audienceOf(url: string | URL): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  return u.port !== '' ? u.port : u.protocol === 'https:' ? '443' : '80';
}

/** The parts of a request a signature covers. */
export interface WorkerRequestParts {
  /** `POST` (compared in upper case). */
  method: string;
  /** The route path the scheduler serves, e.g. `/api/v1/workers/42.0.1/heartbeat`. */
  path: string;
  /** The exact bytes sent. */
  body: string | Uint8Array;
  /**
   * The port of the server the request is addressed to (`'8780'`), signed when given and
   * sent as `x-es-audience`.
   */
  audience?: string | undefined;
}

const NONCE = /^[0-9A-Za-z_-]{16,128}$/;
const TIMESTAMP = /^\d{1,16}$/;
const HEX_SIGNATURE = /^[0-9a-f]{64}$/;

function sha256(body: string | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}

// A distinct first line for requests and answers: neither signature can pass for the other.
function mac(key: string, kind: 'request' | 'answer', fields: readonly string[]): string {
  return createHmac('sha256', key)
    .update([`elastic-serving worker ${kind} v1`, ...fields].join('\n'))
    .digest('hex');
}

function sameSignature(expected: string, given: string | null | undefined): boolean {
  if (given === null || given === undefined || !HEX_SIGNATURE.test(given)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(given, 'hex'));
}

function requestMac(key: string, parts: WorkerRequestParts, timestamp: string, nonce: string) {
  return mac(key, 'request', [
    parts.method.toUpperCase(),
    parts.path,
    timestamp,
    nonce,
    sha256(parts.body),
    // Only when signed for one: requests signed without keep their signature.
    ...(parts.audience === undefined ? [] : [`audience ${parts.audience}`]),
  ]);
}

/**
 * The headers that sign one request: `x-es-timestamp`, `x-es-nonce`, `x-es-signature`.
 * @example
 * const body = JSON.stringify({ state: 'ready', restartCount: 0 });
 * const headers = signWorkerRequest(workerKey, { method: 'POST', path, body });
 * await fetch(url + path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
 */
export function signWorkerRequest(
  key: string,
  parts: WorkerRequestParts,
  options: { now?: number; nonce?: string } = {},
): Record<string, string> {
  const timestamp = String(Math.round(options.now ?? Date.now()));
  const nonce = options.nonce ?? randomBytes(16).toString('hex');
  return {
    [WORKER_SIGNATURE_HEADERS.timestamp]: timestamp,
    [WORKER_SIGNATURE_HEADERS.nonce]: nonce,
    [WORKER_SIGNATURE_HEADERS.signature]: requestMac(key, parts, timestamp, nonce),
    ...(parts.audience === undefined
      ? {}
      : { [WORKER_SIGNATURE_HEADERS.audience]: parts.audience }),
  };
}

/** What an answer's signature covers. */
export interface WorkerAnswerParts {
  /** The `x-es-nonce` of the request answered (`''` when it had none). */
  nonce: string;
  status: number;
  /** The exact bytes of the answer's body. */
  body: string | Uint8Array;
}

/** The `x-es-signature` of an answer: the scheduler proves it knows the key. */
export function signWorkerAnswer(key: string, parts: WorkerAnswerParts): string {
  return mac(key, 'answer', [parts.nonce, String(parts.status), sha256(parts.body)]);
}

/** Whether `signature` (an answer's `x-es-signature`) signs `parts` with `key`. */
export function isSignedWorkerAnswer(
  key: string,
  parts: WorkerAnswerParts,
  signature: string | null | undefined,
): boolean {
  return sameSignature(signWorkerAnswer(key, parts), signature);
}

/** Options of {@link createWorkerRequestVerifier}. */
export interface WorkerRequestVerifierOptions {
  /** `deriveKeys(secret).workerKey`. */
  key: string;
  /** Default {@link WORKER_SIGNATURE_WINDOW_MS}. */
  windowMs?: number;
  /** Default `Date.now`. */
  now?: () => number;
  /**
   * No request signed earlier is accepted (default: `now()` when the verifier is made, i.e.
   * when the scheduler starts). This is what refuses, after a restart, a request captured
   * before it: the nonces the previous process had seen are gone, its requests are not.
   */
  startedAt?: number;
  /** Nonces remembered at most (default {@link MAX_REMEMBERED_NONCES}). */
  maxNonces?: number;
  /**
   * The ports this server listens on, read at each request: when given, a request must be
   * signed for one of them (`audience`), so one a squatter received on another port cannot
   * be relayed here. Undefined: no audience required.
   */
  audiences?: () => readonly string[];
}

/** A request as the verifier reads it. */
export interface SignedWorkerRequest extends WorkerRequestParts {
  /** A header's value, by lower-case name. */
  header(name: string): string | undefined;
}

/** The verdict on one request. */
export type WorkerRequestCheck =
  | { ok: true; nonce: string }
  | {
      ok: false;
      /** 401 for the three refusals; 503 `busy` when the nonce memory is full. */
      status: 401 | 503;
      code: WorkerRequestRefusalCode | 'busy';
      /** Names the header and the fix. */
      message: string;
      /** The header that was wrong. */
      param: string;
    };

/** See {@link createWorkerRequestVerifier}. */
export interface WorkerRequestVerifier {
  /** Checks one request; an accepted nonce is remembered, so the same request passes once. */
  verify(request: SignedWorkerRequest): WorkerRequestCheck;
  /** Requests signed before this instant are refused as `stale`. */
  readonly startedAt: number;
  /** Nonces remembered now (expired ones are dropped as requests arrive). */
  readonly remembered: number;
}

/**
 * The scheduler's check of signed worker requests: a valid signature, a timestamp within
 * ±`windowMs` of now and not before `startedAt`, a nonce not seen within the window.
 * @example
 * const verifier = createWorkerRequestVerifier({ key: deriveKeys(secret).workerKey });
 * const check = verifier.verify({ method, path, body, header: (name) => c.req.header(name) });
 * if (!check.ok) return c.json(openAIErrorBody(check.code, check.message, check.status, check.param), check.status);
 */
export function createWorkerRequestVerifier(
  options: WorkerRequestVerifierOptions,
): WorkerRequestVerifier {
  const { key } = options;
  const now = options.now ?? Date.now;
  const windowMs = options.windowMs ?? WORKER_SIGNATURE_WINDOW_MS;
  const startedAt = options.startedAt ?? now();
  const maxNonces = options.maxNonces ?? MAX_REMEMBERED_NONCES;
  /** Nonce → when its timestamp leaves the window. */
  const seen = new Map<string, number>();
  let sweptAt = 0;
  const sweep = (at: number) => {
    sweptAt = at;
    for (const [nonce, expires] of seen) if (expires < at) seen.delete(nonce);
  };
  const { timestamp: T, nonce: N, signature: S } = WORKER_SIGNATURE_HEADERS;
  const refuse = (
    code: WorkerRequestRefusalCode,
    param: string,
    message: string,
  ): WorkerRequestCheck => ({ ok: false, status: 401, code, param, message });

  return {
    startedAt,
    get remembered() {
      return seen.size;
    },
    verify(request) {
      const timestamp = request.header(T);
      const nonce = request.header(N);
      const signature = request.header(S);
      for (const [name, value] of [
        [S, signature],
        [T, timestamp],
        [N, nonce],
      ] as const) {
        if (value === undefined || value === '') {
          return refuse(
            'bad_signature',
            name,
            `missing ${name}: worker requests must be signed with the key derived from the shared secret (signWorkerRequest of @es/protocol)`,
          );
        }
      }
      if (!TIMESTAMP.test(timestamp!) || !NONCE.test(nonce!)) {
        const param = TIMESTAMP.test(timestamp!) ? N : T;
        return refuse(
          'bad_signature',
          param,
          `malformed ${param}: expected ${param === T ? 'milliseconds since the epoch' : '16 to 128 characters of [0-9A-Za-z_-]'}`,
        );
      }
      const audience = request.header(WORKER_SIGNATURE_HEADERS.audience);
      const signed = { ...request, audience };
      if (!sameSignature(requestMac(key, signed, timestamp!, nonce!), signature)) {
        return refuse(
          'bad_signature',
          S,
          `${S} does not sign this request (method, path, timestamp, nonce and body) with the shared secret's worker key: check that the worker reads the scheduler's secret file`,
        );
      }
      const audiences = options.audiences?.();
      if (audiences !== undefined && (audience === undefined || !audiences.includes(audience))) {
        return refuse(
          'wrong_audience',
          WORKER_SIGNATURE_HEADERS.audience,
          `the request was signed for ${audience === undefined ? 'no port' : `port ${audience}`}, not for this server (port ${audiences.join(' or ')}): a request sent to another address and relayed here, or a tunnel that changes the port (keep the port number)`,
        );
      }
      const at = now();
      const signedAt = Number(timestamp);
      const skew = signedAt - at;
      if (Math.abs(skew) > windowMs) {
        return refuse(
          'stale',
          T,
          `${T} is ${Math.round(Math.abs(skew) / 1000)} s ${skew < 0 ? 'behind' : 'ahead of'} the scheduler's clock (window ±${windowMs / 1000} s): a replayed request, or clocks out of step (sync them with NTP)`,
        );
      }
      if (signedAt < startedAt) {
        return refuse(
          'stale',
          T,
          `${T} is ${startedAt - signedAt} ms before this scheduler started: a request signed before a restart is never accepted after it (a fresh request from a worker whose clock is behind is accepted once its clock passes the start: retry)`,
        );
      }
      if (at - sweptAt >= 1_000 || seen.size >= maxNonces) sweep(at);
      if (seen.has(nonce!)) {
        return refuse('replayed', N, `${N} was already used: a replayed request`);
      }
      if (seen.size >= maxNonces) {
        return {
          ok: false,
          status: 503,
          code: 'busy',
          param: N,
          message: `more than ${maxNonces} signed requests within ±${windowMs / 1000} s: retry later`,
        };
      }
      seen.set(nonce!, signedAt + windowMs);
      return { ok: true, nonce: nonce! };
    },
  };
}
