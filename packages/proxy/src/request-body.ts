import type { IncomingMessage } from 'node:http';
import type { BodyBudget } from './body-budget.js';
import { ProxyError } from './errors.js';
import { jsonSyntaxError, objectMembers } from './json-scan.js';
import { RawJson, isObject, itemsOf, memberOf, textOf, valueAt } from './raw-json.js';

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
 * Bytes of a body charged to the budget one chunk at a time, as they arrive (one socket
 * read); past them the rest of the body is taken all at once (see {@link readNodeBody}).
 */
export const BODY_ALLOWANCE_BYTES = 64 * 1024;

/** The client left (or its connection broke) before its body arrived. */
export function clientClosedBody(cause?: unknown): ProxyError {
  return new ProxyError(
    'client_closed_request',
    'The client closed the request before its body arrived.',
    { status: 499, ...(cause instanceof Error ? { cause } : {}) },
  );
}

/**
 * Read a Node request body, keeping at most `limit` bytes, within `timeoutMs` (0: no limit). A larger body (declared or
 * streamed) is read to its end and discarded before the 413 is answered: closing a
 * connection (`Connection: close`) while the client is still sending makes the kernel answer
 * its next bytes with a reset, which destroys the 413 before the client reads it (RFC 9112
 * §9.6, "lingering close"). The discarding stops after `discardDeadlineMs`.
 *
 * With a `lease`, the bytes kept are charged to its budget as they arrive, up to
 * {@link BODY_ALLOWANCE_BYTES}; the chunk that goes past them takes the rest of the declared
 * length at once. Bytes are charged as they arrive so that a client that declares a large
 * body and sends it slowly holds only what it sent, never room a small body of another
 * client needs; the rest is taken all at once so that two large bodies arriving together
 * are read one after the other, not each holding half the budget waiting for the other. A
 * chunked body has no length to take: it is charged as it arrives to its end (taking `limit`
 * for it would let one slow chunked upload hold the whole budget); two large ones that end
 * up waiting for each other are resolved by the budget, the younger answered 503 at once
 * (see {@link BodyBudget}). While bytes do not fit the socket is not read. A body that finds
 * no room within the budget's wait is discarded the same way and answered 503; its bytes are
 * given back as soon as it is discarded. A client that leaves mid-body rejects with
 * `client_closed_request` (499).
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
    // What a chunk past the allowance takes at once: the whole declared length, if any.
    const ceiling = declared > 0 ? Math.min(declared, limit) : 0;
    // A declared length past the allowance (or with no budget) is read into one buffer: no
    // second copy at the end.
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
            fail(bodyTimedOut(timeoutMs));
          }, timeoutMs)
        : undefined;
    deadline?.unref();
    const giveBack = () => {
      if (lease === undefined || lease.bytes === 0) return;
      lease.budget.release(lease.bytes);
      lease.bytes = 0;
    };
    const fail = (error: ProxyError) => {
      cleanup();
      // Nothing kept is used any more.
      chunks.length = 0;
      whole = undefined;
      giveBack();
      reject(error);
    };
    const startDiscarding = (error: ProxyError) => {
      discarding = error;
      chunks.length = 0;
      whole = undefined;
      giveBack();
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
    // The whole declared length is taken: from here on the body is copied into one buffer.
    const gather = () => {
      if (!(declared > 0) || whole !== undefined) return;
      whole = Buffer.allocUnsafe(declared);
      let at = 0;
      for (const chunk of chunks) at += chunk.copy(whole, at);
      chunks.length = 0;
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
      const held = lease.bytes;
      const more = (size <= BODY_ALLOWANCE_BYTES ? size : Math.max(ceiling, size)) - held;
      const took = () => {
        lease.bytes += more;
        if (lease.bytes === ceiling) gather();
        keep(chunk);
      };
      if (lease.budget.tryTake(more)) {
        took();
        return;
      }
      incoming.pause();
      lease.budget.take(more, waitSignal(), held).then(
        () => {
          if (settled) {
            lease.budget.release(more);
            return;
          }
          took();
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
    // 'aborted' comes with no argument, 'error' with the socket's error: either way the
    // client is gone, unless its body was already refused.
    const onGone = (error?: unknown) => {
      if (discarding !== undefined) {
        cleanup();
        reject(discarding);
        return;
      }
      fail(clientClosedBody(error));
    };
    const cleanup = () => {
      settled = true;
      waiting?.abort();
      if (timer !== undefined) clearTimeout(timer);
      if (deadline !== undefined) clearTimeout(deadline);
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onGone);
      incoming.off('aborted', onGone);
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onGone);
    incoming.on('aborted', onGone);
    if (declared > limit) startDiscarding(tooLarge(limit));
    else if (lease === undefined && declared > 0) whole = Buffer.allocUnsafe(declared);
  });
}

/**
 * Read a web request body (the `app.request()` / non-Node path) with the same limit and the
 * same charging as {@link readNodeBody}: bytes as they arrive up to
 * {@link BODY_ALLOWANCE_BYTES}, then the rest of a declared length at once (nothing is read
 * while they do not fit).
 */
export async function readWebBody(
  request: Request,
  limit: number,
  lease?: BodyLease,
): Promise<Buffer> {
  const declared = Number(request.headers.get('content-length'));
  if (declared > limit) throw tooLarge(limit);
  if (request.body === null) return Buffer.alloc(0);
  const ceiling = declared > 0 ? declared : 0;
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge(limit);
      }
      if (lease !== undefined && size > lease.bytes) {
        const held = lease.bytes;
        const more = (size <= BODY_ALLOWANCE_BYTES ? size : Math.max(ceiling, size)) - held;
        try {
          await lease.budget.take(more, undefined, held);
        } catch (error) {
          await reader.cancel();
          throw error;
        }
        lease.bytes += more;
      }
      chunks.push(value);
    }
  } catch (error) {
    chunks.length = 0;
    if (lease !== undefined) {
      lease.budget.release(lease.bytes);
      lease.bytes = 0;
    }
    throw error;
  }
  return Buffer.concat(chunks, size);
}

/**
 * The JSON object `raw` (whose parsed form is `fields`) with the top-level `members` set:
 * its own members of those names left out, the new ones added (an `undefined` value only
 * removes). Built from the client's bytes, so a large body costs one copy of its bytes,
 * not a serialised string of every field and then its bytes (30 MB less of V8 heap for a
 * 30 MB prompt); `fields` is serialised only if `raw` is not a JSON object.
 */
export function withMembers(
  raw: Buffer,
  fields: Record<string, unknown>,
  members: Record<string, unknown>,
): Buffer {
  const spans = objectMembers(raw);
  if (spans === undefined) return Buffer.from(JSON.stringify({ ...fields, ...members }));
  const parts: Buffer[] = [Buffer.from('{')];
  for (const span of spans) {
    if (typeof span.name === 'string' && Object.hasOwn(members, span.name)) continue;
    if (parts.length > 1) parts.push(Buffer.from(','));
    parts.push(raw.subarray(span.start, span.end));
  }
  for (const [name, value] of Object.entries(members)) {
    if (value === undefined) continue;
    if (parts.length > 1) parts.push(Buffer.from(','));
    parts.push(Buffer.from(`${JSON.stringify(name)}:${JSON.stringify(value)}`));
  }
  parts.push(Buffer.from('}'));
  return Buffer.concat(parts);
}

/**
 * Bodies larger than this are read in place: checked, their small members parsed, their
 * prompt (`messages`, `prompt`, `input`) kept as bytes where large (see {@link RawJson}).
 */
export const LARGE_BODY_BYTES = 1024 * 1024;

const PROMPT_MEMBERS = new Set(['messages', 'prompt', 'input']);

function invalidJson(message: string, cause?: unknown): ProxyError {
  return new ProxyError(
    'invalid_json',
    `We could not parse the JSON body of your request: ${message}`,
    { status: 400, ...(cause === undefined ? {} : { cause }) },
  );
}

/** A large body's members: each parsed, but a large prompt kept as bytes; undefined if not an object. */
function readLarge(raw: Buffer): Record<string, unknown> | undefined {
  const fault = jsonSyntaxError(raw);
  if (fault !== undefined) throw invalidJson(fault.message);
  const members = objectMembers(raw);
  if (members === undefined) return undefined;
  const body: Record<string, unknown> = {};
  for (const { name, valueStart, end } of members) {
    const span = { start: valueStart, end };
    const value = PROMPT_MEMBERS.has(name as string)
      ? valueAt(raw, span)
      : JSON.parse(raw.toString('utf8', valueStart, end));
    // As JSON.parse does: a member named `__proto__` is an own property, not the prototype.
    Object.defineProperty(body, name as string, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return body;
}

/**
 * Parse the body once, to read `model`, `stream` and `user`. A body over
 * {@link LARGE_BODY_BYTES} is read in place (its prompt not made into strings); the same
 * bodies are refused, with the same codes.
 */
export function parseRequest(raw: Buffer): ParsedRequest {
  let body: unknown;
  if (raw.length > LARGE_BODY_BYTES) body = readLarge(raw);
  else {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (error) {
      throw invalidJson((error as Error).message, error);
    }
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
 * embedding input): requests sharing it share the engine's prefix cache. A large body's
 * prompt is read in place, to the same key (a token-id prompt kept as bytes gives its
 * bytes, which are the same text when the client sends compact JSON, as the openai client does).
 */
export function promptPrefix(body: Record<string, unknown>, maxChars: number): string | undefined {
  let prefix = '';
  const left = () => maxChars - prefix.length;
  const add = (text: string) => {
    if (prefix.length < maxChars) prefix += text.slice(0, left());
  };
  const messages = itemsOf(body.messages);
  if (messages !== undefined) {
    for (const message of messages) {
      if (left() <= 0) break;
      if (!isObject(message)) continue;
      const role = memberOf(message, 'role');
      add(`${textOf(role, left()) ?? String(role)}\u0000`);
      const content = memberOf(message, 'content');
      const text = textOf(content, left());
      if (text !== undefined) add(text);
      else {
        for (const part of itemsOf(content) ?? []) {
          if (left() <= 0) break;
          const partText = textOf(memberOf(part, 'text'), left());
          if (partText !== undefined) add(partText);
        }
      }
      add('\u0001');
    }
  } else {
    const prompt = body.prompt ?? body.input;
    const text = textOf(prompt, maxChars);
    if (text !== undefined) add(text);
    else {
      for (const first of itemsOf(prompt) ?? []) {
        add(
          textOf(first, maxChars) ??
            (first instanceof RawJson
              ? first.raw.toString('utf8', first.start, Math.min(first.end, first.start + maxChars))
              : JSON.stringify(first)),
        );
        break;
      }
    }
  }
  return prefix === '' ? undefined : prefix;
}
