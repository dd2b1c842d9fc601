import type { IncomingMessage } from 'node:http';
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

/**
 * Read a Node request body, keeping at most `limit` bytes, within `timeoutMs` (0: no limit). A larger body (declared or
 * streamed) is read to its end and discarded before the 413 is answered: closing a
 * connection (`Connection: close`) while the client is still sending makes the kernel answer
 * its next bytes with a reset, which destroys the 413 before the client reads it (RFC 9112
 * §9.6, "lingering close"). The discarding stops after `discardDeadlineMs`.
 */
export function readNodeBody(
  incoming: IncomingMessage,
  limit: number,
  timeoutMs = 0,
  discardDeadlineMs = DISCARD_DEADLINE_MS,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let discarding = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline =
      timeoutMs > 0
        ? setTimeout(() => {
            if (discarding) return;
            cleanup();
            reject(bodyTimedOut(timeoutMs));
          }, timeoutMs)
        : undefined;
    deadline?.unref();
    const startDiscarding = () => {
      discarding = true;
      chunks.length = 0;
      timer = setTimeout(finishDiscarding, discardDeadlineMs);
      timer.unref();
    };
    const finishDiscarding = () => {
      cleanup();
      // Whatever still arrives is dropped, never buffered.
      incoming.resume();
      reject(tooLarge(limit));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (discarding) return;
      if (size > limit) {
        startDiscarding();
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      if (discarding) {
        finishDiscarding();
        return;
      }
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(discarding ? tooLarge(limit) : error);
    };
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      if (deadline !== undefined) clearTimeout(deadline);
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
      incoming.off('aborted', onError);
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
    incoming.on('aborted', onError);
    if (Number(incoming.headers['content-length']) > limit) startDiscarding();
  });
}

/** Read a web request body (the `app.request()` / non-Node path) with the same limit. */
export async function readWebBody(request: Request, limit: number): Promise<Buffer> {
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
