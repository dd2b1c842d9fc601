/**
 * The request log: one record per inference request an engine receives, kept in memory and,
 * with `requestLogDir`, appended as a JSON line to `<dir>/requests-<pid>.jsonl`, so a checker
 * can tell a continuation (same request id, longer prompt) from a restart (same request id,
 * same prompt length). The moment each request's first token is sent goes, with the same
 * `requestId` and `promptTokens`, to `<dir>/first-tokens-<pid>.jsonl`: a restart is a request
 * received again after an engine had already sent tokens for it. (A file of its own, so the
 * request log stays one record shape per line.)
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { GenerationRequest } from './requests.js';

/** One line of the request log. */
export interface RequestLogRecord {
  /** When the request was received, ms since the epoch. */
  at: number;
  /** `/v1/chat/completions` or `/v1/completions`. */
  path: string;
  /** The `x-request-id` header, else null. */
  requestId: string | null;
  /** Number of prompt token ids. */
  promptTokens: number;
  /** `max_tokens` (or `max_completion_tokens`) as the request gave it, else null. */
  maxTokens: number | null;
  stream: boolean;
  returnTokenIds: boolean;
}

/** One line of `first-tokens-<pid>.jsonl`: a request's first token was sent. */
export interface FirstTokenRecord {
  /** When the first token was written to the response, ms since the epoch. */
  at: number;
  event: 'first-token';
  /** The `x-request-id` header, else null. */
  requestId: string | null;
  /** `/v1/chat/completions` or `/v1/completions`. */
  path: string;
  /** Number of prompt token ids of the request (as in its request log record). */
  promptTokens: number;
  pid: number;
}

// In memory, the log keeps the latest records only: an engine may run for days.
const MEMORY_LIMIT = 100_000;

/** The log of one engine; `dir` undefined = in memory only. */
export function createRequestLog(dir: string | undefined) {
  const records: RequestLogRecord[] = [];
  let file: string | undefined;
  let firstTokenFile: string | undefined;
  if (dir !== undefined) {
    mkdirSync(dir, { recursive: true });
    file = join(dir, `requests-${process.pid}.jsonl`);
    firstTokenFile = join(dir, `first-tokens-${process.pid}.jsonl`);
  }
  const idOf = (req: IncomingMessage): string | null => {
    const header = req.headers['x-request-id'];
    return typeof header === 'string' ? header : null;
  };
  return {
    records,
    record(req: IncomingMessage, request: GenerationRequest, promptTokens: number): void {
      const record: RequestLogRecord = {
        at: Date.now(),
        path: pathOf(req),
        requestId: idOf(req),
        promptTokens,
        maxTokens: request.requestedMaxTokens,
        stream: request.stream,
        returnTokenIds: request.returnTokenIds,
      };
      // Synchronous on purpose: a SIGKILL must not lose the line of a request already answered.
      if (file !== undefined) appendFileSync(file, `${JSON.stringify(record)}\n`);
      records.push(record);
      if (records.length > MEMORY_LIMIT) records.splice(0, records.length - MEMORY_LIMIT);
    },
    /** The request's first token is being sent (file only: nothing in memory reads it). */
    firstToken(req: IncomingMessage, promptTokens: number): void {
      if (firstTokenFile === undefined) return;
      const record: FirstTokenRecord = {
        at: Date.now(),
        event: 'first-token',
        requestId: idOf(req),
        path: pathOf(req),
        promptTokens,
        pid: process.pid,
      };
      // Synchronous, like the request lines: a SIGKILL right after the write keeps it.
      appendFileSync(firstTokenFile, `${JSON.stringify(record)}\n`);
    },
  };
}

const pathOf = (req: IncomingMessage): string => (req.url ?? '/').split('?')[0] ?? '/';
