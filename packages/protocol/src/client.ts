/**
 * The worker side of the worker protocol: one typed call per route, each returning a
 * {@link WorkerCallResult} instead of throwing, so the caller's decision (register again,
 * exit, retry, give up) is a `switch` on `kind`.
 */
import * as v from 'valibot';
import { ErrorBodySchema, WORKER_ROUTES, workerRoutePath } from './schemas.js';
import {
  WORKER_SIGNATURE_HEADERS,
  audienceOf,
  isSignedWorkerAnswer,
  signWorkerRequest,
} from './signing.js';
import type {
  DeregisterRequest,
  DrainRequest,
  HandoverRequest,
  HandoverResponse,
  HeartbeatRequest,
  OkResponse,
  RegisterRequest,
  RegisterResponse,
  WorkerRouteName,
} from './schemas.js';

/** A `fetch` the client can use (the global one, undici's, `app.request` of a Hono app...). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response> | Response;

/** Options of {@link createWorkerClient}. */
export interface WorkerClientOptions {
  /**
   * The scheduler's base URL (`http://login1:8780`), or a function returning the current
   * one, read at every call: a worker following the scheduler-URL file passes
   * `() => currentUrl`. A path in the URL is kept (`http://gw/es` → `http://gw/es/api/v1/...`).
   */
  schedulerUrl: string | (() => string);
  /**
   * `deriveKeys(secret).workerKey`: every request is signed with it (`x-es-timestamp`,
   * `x-es-nonce`, `x-es-signature`; the key itself is never sent) and every answer must be
   * signed with it too: an answer that is not is ignored (`unreachable`, `unsigned: true`).
   * Without it nothing is signed or checked (a scheduler without authentication: tests).
   */
  workerKey?: string | undefined;
  /** Timeout of each call, from sending to the whole answer read (ms, default 5000). */
  timeoutMs?: number;
  /** Default: the global `fetch`. */
  fetch?: FetchLike;
}

/** Per-call options. */
export interface WorkerCallOptions {
  /** Overrides the client's `timeoutMs` for this call (drain notices use a shorter one). */
  timeoutMs?: number;
  /** Aborts the call; the result is then `unreachable` with the signal's reason. */
  signal?: AbortSignal;
}

/** What the scheduler said when it did not say yes. */
interface Refusal {
  ok: false;
  /** The HTTP status. */
  status: number;
  /** The scheduler's `error.message`, else the body's text (at most 500 characters). */
  message: string;
  /** The scheduler's `error.code` (`unknown_worker`, `unknown_deployment`, `fenced`...). */
  code: string | undefined;
}

/**
 * The outcome of one call, never thrown:
 * - `ok` (2xx, body matches the contract): `body` is the parsed answer.
 * - `unknown` (404): the scheduler does not know this worker (heartbeat, drain, deregister:
 *   register again) or, for register, the deployment (`code: 'unknown_deployment'`).
 * - `fenced` (409): this incarnation was replaced or ended: exit.
 * - `unauthorized` (401, 403): the signature was refused; `code` says why: `stale` (the
 *   worker's clock is off, or it is behind a freshly restarted scheduler's: retry),
 *   `replayed`, `bad_signature`.
 * - `rejected` (400, 413, 422): the scheduler refused the body; sending it again is useless.
 * - `unexpected`: any other answer (5xx, another status, a 2xx whose body is off-contract).
 * - `unreachable`: no answer: connection refused or reset, DNS, timeout (`timedOut`), abort;
 *   or an answer not signed with the worker key (`unsigned`): whoever answered does not know
 *   the secret (a squatter on the scheduler's port), so what it said means nothing.
 */
export type WorkerCallResult<T> =
  | { ok: true; kind: 'ok'; status: number; body: T }
  | (Refusal & { kind: 'unknown'; status: 404 })
  | (Refusal & { kind: 'fenced'; status: 409 })
  | (Refusal & { kind: 'unauthorized' })
  | (Refusal & { kind: 'rejected' })
  | (Refusal & { kind: 'unexpected' })
  | {
      ok: false;
      kind: 'unreachable';
      /** `POST <url>: <what went wrong>`. */
      message: string;
      /** True when the call ran out of time. */
      timedOut: boolean;
      /** True when an answer came but was not signed with the worker key: ignored. */
      unsigned: boolean;
      cause: unknown;
    };

/** Every result that is not `ok`. */
export type WorkerCallFailure = Exclude<WorkerCallResult<unknown>, { ok: true }>;

/** The worker protocol's client; see {@link createWorkerClient}. */
export interface WorkerClient {
  /** `register`: 200 gives the worker id and the heartbeat interval. */
  register(
    body: RegisterRequest,
    options?: WorkerCallOptions,
  ): Promise<WorkerCallResult<RegisterResponse>>;
  /** `heartbeat`: `unknown` means register again, `fenced` means exit. */
  heartbeat(
    workerId: string,
    body: HeartbeatRequest,
    options?: WorkerCallOptions,
  ): Promise<WorkerCallResult<OkResponse>>;
  /** `drain`: the scheduler stops routing to the worker now. */
  drain(
    workerId: string,
    body: DrainRequest,
    options?: WorkerCallOptions,
  ): Promise<WorkerCallResult<OkResponse>>;
  /** `deregister`: the worker is gone. */
  deregister(
    workerId: string,
    body: DeregisterRequest,
    options?: WorkerCallOptions,
  ): Promise<WorkerCallResult<OkResponse>>;
  /**
   * `handover`: the generations still running on `body.workerIds` are to be continued
   * elsewhere, their engines stop in `body.stopInMs`. `unknown` when the scheduler knows
   * none of the ids; `ok` lists the ones it announced.
   */
  handover(
    body: HandoverRequest,
    options?: WorkerCallOptions,
  ): Promise<WorkerCallResult<HandoverResponse>>;
  /** The base URL the next call goes to. */
  readonly schedulerUrl: string;
}

const MAX_MESSAGE = 500;

/** The `error.message` (and `code`) of an error body, else the text itself (trimmed). */
function refusalOf(text: string): { message: string; code: string | undefined } {
  try {
    const parsed = v.safeParse(ErrorBodySchema, JSON.parse(text));
    if (parsed.success && parsed.output.error.message !== '') {
      return { message: parsed.output.error.message, code: parsed.output.error.code ?? undefined };
    }
  } catch {
    // Not JSON: use the text.
  }
  return { message: text.trim().slice(0, MAX_MESSAGE) || 'no reason given', code: undefined };
}

function kindOf(status: number): Exclude<WorkerCallResult<unknown>['kind'], 'ok' | 'unreachable'> {
  if (status === 404) return 'unknown';
  if (status === 409) return 'fenced';
  if (status === 401 || status === 403) return 'unauthorized';
  if (status === 400 || status === 413 || status === 422) return 'rejected';
  return 'unexpected';
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch() says "fetch failed"; the reason (ECONNREFUSED ...) is its cause.
  const cause = error.cause instanceof Error ? error.cause.message : undefined;
  return cause && cause !== error.message ? `${error.message} (${cause})` : error.message;
}

/** The timeout's own error, so a timeout is told apart from the caller's abort. */
class CallTimeout extends Error {
  override readonly name = 'TimeoutError';
}

/**
 * Creates the worker protocol's client. Calls never throw: every outcome is a
 * {@link WorkerCallResult}. There is no retry inside: the caller decides.
 * @example
 * const client = createWorkerClient({ schedulerUrl: () => url, workerKey: keys.workerKey });
 * const result = await client.heartbeat(workerId, { state: 'ready', restartCount: 0 });
 * if (result.kind === 'unknown') await registerAgain();
 * else if (result.kind === 'fenced') exit(result.message);
 * else if (result.kind === 'unreachable') log.warn(result.message);
 */
export function createWorkerClient(options: WorkerClientOptions): WorkerClient {
  const { schedulerUrl } = options;
  const baseUrl = typeof schedulerUrl === 'function' ? schedulerUrl : () => schedulerUrl;
  const doFetch: FetchLike = options.fetch ?? ((input, init) => fetch(input, init));
  const defaultTimeoutMs = options.timeoutMs ?? 5_000;
  const { workerKey } = options;

  async function call<R extends WorkerRouteName>(
    route: R,
    workerId: string,
    body: unknown,
    callOptions: WorkerCallOptions = {},
  ): Promise<WorkerCallResult<v.InferOutput<(typeof WORKER_ROUTES)[R]['response']>>> {
    const { method, response: responseSchema } = WORKER_ROUTES[route];
    let url: string;
    try {
      url = new URL(workerRoutePath(route, workerId).slice(1), withSlash(baseUrl())).href;
    } catch (error) {
      return {
        ok: false,
        kind: 'unreachable',
        message: `${method} ${workerRoutePath(route, workerId)}: invalid scheduler URL "${baseUrl()}"`,
        timedOut: false,
        unsigned: false,
        cause: error,
      };
    }
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (workerKey) {
      const path = workerRoutePath(route, workerId);
      // Signed for the port it is sent to: a squatter elsewhere cannot relay it here.
      Object.assign(
        headers,
        signWorkerRequest(workerKey, { method, path, body: text, audience: audienceOf(url) }),
      );
    }
    const nonce = headers[WORKER_SIGNATURE_HEADERS.nonce] ?? '';
    const timeoutMs = callOptions.timeoutMs ?? defaultTimeoutMs;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new CallTimeout(`timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onAbort = () => controller.abort(callOptions.signal?.reason);
    if (callOptions.signal?.aborted) onAbort();
    else callOptions.signal?.addEventListener('abort', onAbort, { once: true });
    // An injected fetch may ignore the signal: the abort settles the call anyway.
    const aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(controller.signal.reason);
      if (controller.signal.aborted) fail();
      else controller.signal.addEventListener('abort', fail, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      const answer = await Promise.race([
        (async () => {
          const response = await doFetch(url, {
            method,
            headers,
            body: text,
            signal: controller.signal,
          });
          const bytes = new Uint8Array(await response.arrayBuffer());
          return {
            status: response.status,
            bytes,
            signature: response.headers.get(WORKER_SIGNATURE_HEADERS.signature),
          };
        })(),
        aborted,
      ]);
      const { status, bytes, signature } = answer;
      if (
        workerKey &&
        !isSignedWorkerAnswer(workerKey, { nonce, status, body: bytes }, signature)
      ) {
        return {
          ok: false,
          kind: 'unreachable',
          message:
            `${method} ${url}: ignored an answer (HTTP ${status}) ${signature ? 'wrongly signed' : 'not signed'}: ` +
            `whoever answered does not know the shared secret (another process on the scheduler's port, or a scheduler reading another secret file)`,
          timedOut: false,
          unsigned: true,
          cause: undefined,
        };
      }
      const answerText = new TextDecoder().decode(bytes);
      if (status >= 200 && status < 300) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(answerText);
        } catch {
          parsed = undefined;
        }
        const checked = v.safeParse(responseSchema, parsed);
        if (checked.success) {
          return { ok: true, kind: 'ok', status, body: checked.output } as WorkerCallResult<
            v.InferOutput<(typeof WORKER_ROUTES)[R]['response']>
          >;
        }
        return {
          ok: false,
          kind: 'unexpected',
          status,
          message: `answer of ${method} ${url} is not the protocol's: ${answerText.trim().slice(0, MAX_MESSAGE)}`,
          code: undefined,
        };
      }
      const { message, code } = refusalOf(answerText);
      return { ok: false, kind: kindOf(status), status, message, code } as WorkerCallFailure;
    } catch (error) {
      const timedOut = error instanceof CallTimeout;
      return {
        ok: false,
        kind: 'unreachable',
        message: `${method} ${url}: ${timedOut ? error.message : describe(error)}`,
        timedOut,
        unsigned: false,
        cause: error,
      };
    } finally {
      clearTimeout(timer);
      callOptions.signal?.removeEventListener('abort', onAbort);
    }
  }

  return {
    register: (body, callOptions) => call('register', '', body, callOptions),
    heartbeat: (workerId, body, callOptions) => call('heartbeat', workerId, body, callOptions),
    drain: (workerId, body, callOptions) => call('drain', workerId, body, callOptions),
    deregister: (workerId, body, callOptions) => call('deregister', workerId, body, callOptions),
    handover: (body, callOptions) => call('handover', '', body, callOptions),
    get schedulerUrl() {
      return baseUrl();
    },
  };
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}
