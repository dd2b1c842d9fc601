import type { IncomingMessage } from 'node:http';
import type { BodyBudget } from './body-budget.js';
import { ProxyError } from './errors.js';

/** What the proxy reads from a request body: the rest is forwarded as the original bytes. */
export interface ParsedRequest {
  model: string;
  stream: boolean;
  /** The OpenAI `user` field, a natural session key. */
  user?: string;
  /** The parsed body, kept to compute a prompt-prefix key only when a policy needs it. */
  body: Record<string, unknown>;
}

/** `application/json`, with or without parameters such as `charset`. */
export function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const semi = value.indexOf(';');
  const type = (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

export function tooLarge(limit: number): ProxyError {
  return new ProxyError(
    'request_too_large',
    `Request body is larger than the limit of ${limit} bytes.`,
    { status: 413 },
  );
}

/** Longest time an oversized body is read and discarded before its 413 is sent. */
export const DISCARD_DEADLINE_MS = 10_000;

/** The body did not arrive in time (a slow-loris upload, or a stalled client). */
export function bodyTimedOut(timeoutMs: number): ProxyError {
  return new ProxyError(
    'request_timeout',
    `The request body did not arrive within ${timeoutMs / 1000} s.`,
    // The client is still (slowly) sending: the connection cannot be reused.
    { status: 408, headers: { connection: 'close' } },
  );
}

/** Bytes of a {@link BodyBudget} one request holds; the caller releases them when done. */
export interface BodyLease {
  budget: BodyBudget;
  bytes: number;
}

/**
 * Read a Node request body, keeping at most `limit` bytes, within `timeoutMs` (0: no limit). A larger body (declared or
 * streamed) is read to its end and discarded before the 413 is answered: closing a
 * connection (`Connection: close`) while the client is still sending makes the kernel answer
 * its next bytes with a reset, which destroys the 413 before the client reads it (RFC 9112
 * §9.6, "lingering close"). The discarding stops after `discardDeadlineMs`.
 *
 * With a `lease`, the bytes kept are taken from its budget first (a declared length at once,
 * a chunked body as it arrives); while they do not fit the socket is not read. A body that
 * finds no room within the budget's wait is discarded the same way and answered 503.
 */
export function readNodeBody(
  incoming: IncomingMessage,
  limit: number,
  timeoutMs = 0,
  discardDeadlineMs = DISCARD_DEADLINE_MS,
  lease?: BodyLease,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const declared = Number(incoming.headers['content-length']);
    // A declared length is read into one buffer: no second copy at the end.
    let whole: Buffer | undefined;
    let size = 0;
    let discarding: ProxyError | undefined;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    // Made only when a body waits for the budget: most never do.
    let waiting: AbortController | undefined;
    const waitSignal = () => (waiting ??= new AbortController()).signal;
    const deadline =
      timeoutMs > 0
        ? setTimeout(() => {
            if (discarding !== undefined) return;
            cleanup();
            reject(bodyTimedOut(timeoutMs));
          }, timeoutMs)
        : undefined;
    deadline?.unref();
    const startDiscarding = (error: ProxyError) => {
      discarding = error;
      chunks.length = 0;
      whole = undefined;
      timer = setTimeout(finishDiscarding, discardDeadlineMs);
      timer.unref();
      incoming.resume();
    };
    const finishDiscarding = () => {
      cleanup();
      // Whatever still arrives is dropped, never buffered.
      incoming.resume();
      reject(discarding);
    };
    const keep = (chunk: Buffer) => {
      if (whole !== undefined) chunk.copy(whole, size - chunk.length);
      else chunks.push(chunk);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (discarding !== undefined) return;
      if (size > limit) {
        startDiscarding(tooLarge(limit));
        return;
      }
      if (lease === undefined || size <= lease.bytes) {
        keep(chunk);
        return;
      }
      const more = size - lease.bytes;
      if (lease.budget.tryTake(more)) {
        lease.bytes += more;
        keep(chunk);
        return;
      }
      incoming.pause();
      lease.budget.take(more, waitSignal()).then(
        () => {
          lease.bytes += more;
          keep(chunk);
          incoming.resume();
        },
        (error: unknown) => {
          if (!settled) startDiscarding(error as ProxyError);
        },
      );
    };
    const onEnd = () => {
      if (discarding !== undefined) {
        finishDiscarding();
        return;
      }
      cleanup();
      if (whole !== undefined) resolve(size === whole.length ? whole : whole.subarray(0, size));
      else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(discarding ?? error);
    };
    const cleanup = () => {
      settled = true;
      waiting?.abort();
      if (timer !== undefined) clearTimeout(timer);
      if (deadline !== undefined) clearTimeout(deadline);
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
      incoming.off('aborted', onError);
    };
    const listen = () => {
      incoming.on('data', onData);
      incoming.on('end', onEnd);
      incoming.on('error', onError);
      incoming.on('aborted', onError);
    };
    if (declared > limit) {
      listen();
      startDiscarding(tooLarge(limit));
      return;
    }
    if (!(declared > 0)) {
      listen();
      return;
    }
    if (lease === undefined) {
      whole = Buffer.allocUnsafe(declared);
      listen();
      return;
    }
    if (lease.budget.tryTake(declared)) {
      lease.bytes = declared;
      whole = Buffer.allocUnsafe(declared);
      listen();
      return;
    }
    // Nothing is read until the declared length fits the budget.
    incoming.once('aborted', onError);
    lease.budget.take(declared, waitSignal()).then(
      () => {
        incoming.off('aborted', onError);
        if (settled) {
          lease.budget.release(declared);
          return;
        }
        lease.bytes = declared;
        whole = Buffer.allocUnsafe(declared);
        listen();
      },
      (error: unknown) => {
        incoming.off('aborted', onError);
        if (settled) return;
        listen();
        startDiscarding(error as ProxyError);
      },
    );
  });
}

/**
 * Read a web request body (the `app.request()` / non-Node path) with the same limit, taking
 * its bytes from the `lease`'s budget as they arrive (nothing is read while they do not fit).
 */
export async function readWebBody(
  request: Request,
  limit: number,
  lease?: BodyLease,
): Promise<Buffer> {
  const declared = Number(request.headers.get('content-length'));
  if (declared > limit) throw tooLarge(limit);
  if (request.body === null) return Buffer.alloc(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(limit);
    }
    if (lease !== undefined) {
      try {
        await lease.budget.take(value.byteLength);
      } catch (error) {
        await reader.cancel();
        throw error;
      }
      lease.bytes += value.byteLength;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size);
}

/** Parse the body once, to read `model`, `stream` and `user`. */
export function parseRequest(raw: Buffer): ParsedRequest {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw new ProxyError(
      'invalid_json',
      `We could not parse the JSON body of your request: ${(error as Error).message}`,
      { status: 400, cause: error },
    );
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ProxyError('invalid_request_body', 'The request body must be a JSON object.', {
      status: 400,
    });
  }
  const record = body as Record<string, unknown>;
  const model = record.model;
  if (model === undefined || model === null || model === '') {
    throw new ProxyError('missing_model', 'You must provide a model parameter.', {
      status: 400,
      param: 'model',
    });
  }
  if (typeof model !== 'string') {
    throw new ProxyError('invalid_request_body', 'The model parameter must be a string.', {
      status: 400,
      param: 'model',
    });
  }
  const parsed: ParsedRequest = { model, stream: record.stream === true, body: record };
  if (typeof record.user === 'string' && record.user !== '') parsed.user = record.user;
  return parsed;
}

/**
 * The first `maxChars` characters of the prompt (chat messages, completion prompt or
 * embedding input): requests sharing it share the engine's prefix cache.
 */
export function promptPrefix(body: Record<string, unknown>, maxChars: number): string | undefined {
  let prefix = '';
  const add = (text: string) => {
    if (prefix.length < maxChars) prefix += text.slice(0, maxChars - prefix.length);
  };
  const messages = body.messages;
  if (Array.isArray(messages)) {
    for (const message of messages) {
      if (prefix.length >= maxChars) break;
      if (typeof message !== 'object' || message === null) continue;
      const { role, content } = message as { role?: unknown; content?: unknown };
      add(`${String(role)}\u0000`);
      if (typeof content === 'string') add(content);
      else if (Array.isArray(content)) {
        for (const part of content) {
          const text = (part as { text?: unknown } | null)?.text;
          if (typeof text === 'string') add(text);
        }
      }
      add('\u0001');
    }
  } else {
    const prompt = body.prompt ?? body.input;
    if (typeof prompt === 'string') add(prompt);
    else if (Array.isArray(prompt) && prompt.length > 0) {
      const first = prompt[0];
      add(typeof first === 'string' ? first : JSON.stringify(first));
    }
  }
  return prefix === '' ? undefined : prefix;
}
