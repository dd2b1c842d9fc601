/**
 * The request log: one record per inference request an engine receives, kept in memory and,
 * with `requestLogDir`, appended as a JSON line to `<dir>/requests-<pid>.jsonl`, so a checker
 * can tell a continuation (same request id, longer prompt) from a restart (same request id,
 * same prompt length).
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

// In memory, the log keeps the latest records only: an engine may run for days.
const MEMORY_LIMIT = 100_000;

/** The log of one engine; `dir` undefined = in memory only. */
export function createRequestLog(dir: string | undefined) {
  const records: RequestLogRecord[] = [];
  let file: string | undefined;
  if (dir !== undefined) {
    mkdirSync(dir, { recursive: true });
    file = join(dir, `requests-${process.pid}.jsonl`);
  }
  return {
    records,
    record(req: IncomingMessage, request: GenerationRequest, promptTokens: number): void {
      const header = req.headers['x-request-id'];
      const record: RequestLogRecord = {
        at: Date.now(),
        path: (req.url ?? '/').split('?')[0] ?? '/',
        requestId: typeof header === 'string' ? header : null,
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
  };
}
