/**
 * Writing one generation as a server-sent-event stream, paced like an engine: the first
 * token after `ttft`, then `tokensPerSecond`, with backpressure, and the stream faults
 * (`dropChunk`, `killMidStream`, `dieMidStream`). The chunks' bodies come from
 * `responses.ts`.
 */
import type { ServerResponse } from 'node:http';
import type { Sequence } from './batch.js';
import { codePoints } from './generation.js';
import type { Generation } from './generation.js';
import type { ResolvedOptions } from './options.js';
import type { GenerationRequest } from './requests.js';
import {
  nowSeconds,
  parsedWireDelta,
  roleChunk,
  sseEvent,
  tokenChunk,
  usageOf,
} from './responses.js';
import type { ParsedAnswer } from './responses.js';

/** How a generation ends: answered in full, failed before its answer, or cut mid-stream. */
export type Outcome = 'completed' | 'failed' | 'killed';

/** What {@link streamGeneration} writes, and who it tells. */
export interface StreamGeneration {
  res: ServerResponse;
  request: GenerationRequest;
  plan: Generation;
  /** A chat answer the endpoint parses (an output format). */
  parsed?: ParsedAnswer | undefined;
  /** The answer's id (`chatcmpl-…`, `cmpl-…`). */
  id: string;
  opts: ResolvedOptions;
  /** The request's place in the batch; its timer is the next write. */
  seq: Sequence;
  /** Whether the request has ended (the client left, or it ended here). */
  done: () => boolean;
  end: (outcome: Outcome) => void;
  /** One more generated token of `seq`. */
  addToken: () => void;
  /** The first token is about to be written. */
  onFirstToken: () => void;
  /** The engine's process dies now (`killMidStream`). */
  kill: () => void;
}

/** Milliseconds between two chunks at `tokensPerSecond` (0: no pacing). */
export function tokenInterval(opts: ResolvedOptions): number {
  return opts.tokensPerSecond > 0 ? 1000 / opts.tokensPerSecond : 0;
}

/** Stream the generation: headers now, the chunks on their timers. */
export function streamGeneration(stream: StreamGeneration): void {
  const { res, request, plan, parsed, id, opts, seq, done, end } = stream;
  const interval = tokenInterval(opts);
  const chunks = plan.chunkIds.length;
  const stamp = nowSeconds();
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
  });
  if (request.kind === 'chat') res.write(sseEvent(request, id, stamp, roleChunk(request, plan)));
  const firstAt = Date.now() + opts.ttft;
  let sent = 0;
  let idsSent = 0;
  let textSent = 0;
  // An answer of no chunk (an empty script answer) still sends one, with the finish.
  const last = Math.max(1, chunks);
  // --drop-chunk: the Nth chunk is never sent; if it carries no text (a byte inside a
  // character, a marker), the fault moves to the next chunk with text, so the client's
  // output always loses something.
  const empty = (i: number) =>
    parsed ? Object.keys(parsedWireDelta(parsed, i)).length === 0 : plan.deltas[i] === '';
  let drop = opts.dropChunk === undefined ? -1 : opts.dropChunk - 1;
  while (drop >= 0 && drop < chunks - 1 && empty(drop)) drop++;

  const tick = () => {
    seq.timer = undefined;
    if (done()) return;
    const due =
      interval === 0 ? last : Math.min(last, Math.floor((Date.now() - firstAt) / interval) + 1);
    let out = '';
    while (sent < due) {
      // Written before the chunk goes out: an engine killed right after it keeps the line.
      if (sent === 0) stream.onFirstToken();
      const isLast = sent === last - 1;
      // A dropped final chunk is still sent, empty, with the finish.
      const dropped = drop === sent;
      if (!dropped || isLast) {
        const body = tokenChunk(request, plan, sent, idsSent, textSent, dropped, isLast, parsed);
        out += sseEvent(request, id, stamp, body);
      }
      idsSent += plan.chunkIds[sent]?.length ?? 0;
      textSent += codePoints(plan.deltas[sent] ?? '');
      if (sent < chunks) stream.addToken();
      sent++;
      if (opts.killMidStream !== undefined && sent >= opts.killMidStream && !isLast) {
        // The chunks reach the socket first, then the process dies (no FIN, no goodbye).
        res.write(out, stream.kill);
        return;
      }
      if (opts.dieMidStream !== undefined && sent >= opts.dieMidStream && !isLast) {
        end('killed');
        // Destroy only once the chunks are flushed, so the client sees them, then a cut.
        res.write(out, () => res.destroy());
        return;
      }
    }
    if (sent === last) {
      if (request.includeUsage) {
        out += sseEvent(request, id, stamp, { choices: [], usage: usageOf(plan) });
      }
      out += 'data: [DONE]\n\n';
      end('completed');
      res.end(out);
      return;
    }
    const nextAt = firstAt + sent * interval;
    const schedule = () => {
      if (!done()) seq.timer = setTimeout(tick, Math.max(0, nextAt - Date.now()));
    };
    // Respect backpressure: a slow reader must not make the engine buffer without bound.
    if (out.length > 0 && !res.write(out)) res.once('drain', schedule);
    else schedule();
  };
  seq.timer = setTimeout(tick, opts.ttft);
}
