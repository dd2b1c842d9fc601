/**
 * The node:http edge of the mock engine: reading a JSON request body (with vLLM's size
 * limit and its 400 for bad JSON) and writing a JSON answer or an OpenAI-shaped error.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpError, badRequest } from './requests.js';

const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** Answer `body` (a JSON string as is, else serialized) with `status`. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Answer the error's body, or cut the connection when an answer has already begun. */
export function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, error.status, error.body());
}

/** The request's body parsed as JSON; rejects with a 413 or 400 {@link HttpError}. */
export function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, 'request body too large', 'BadRequestError'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(badRequest('request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}
