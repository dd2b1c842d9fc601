/**
 * `/v1/chat/completions` and `/v1/completions`: validate, refuse what is past the context
 * length, plan the output, wait for a place in the batch, count the outcome, then answer
 * in one body or as a stream (`stream-writer.ts`).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EngineState } from './engine-state.js';
import { parseChat } from './chat-output.js';
import { promptTokenCount, traceGeneration } from './generation.js';
import { readBody, sendError, sendJson } from './http-io.js';
import { HttpError, checkContextLength, parseGenerationRequest } from './requests.js';
import { fullResponse, nowSeconds } from './responses.js';
import { streamGeneration, tokenInterval } from './stream-writer.js';
import type { Outcome } from './stream-writer.js';

/** Answer one generation request of `kind`. */
export async function generate(
  state: EngineState,
  req: IncomingMessage,
  res: ServerResponse,
  kind: 'chat' | 'completion',
): Promise<void> {
  const { opts, log, counters, batch } = state;
  const request = parseGenerationRequest(kind, await readBody(req), opts);
  // A prompt past the context length is refused before any generation work: making the
  // ids of a 30 MB prompt blocked this process for seconds (its /health unanswered).
  const promptTokens = promptTokenCount(request.input, opts);
  if (promptTokens > opts.maxModelLen) checkContextLength(promptTokens, request.maxTokens, opts);
  // The one definition of the output. Capped at the context length so that an oversized
  // max_tokens costs nothing before its 400 (a valid one is never above it).
  const { generation: plan, trace } = traceGeneration(request.input, {
    maxTokens: Math.min(request.maxTokens, opts.maxModelLen),
    stop: request.stop,
    stopTokenIds: request.stopTokenIds,
    minTokens: request.minTokens,
    includeStopStrInOutput: request.includeStopStrInOutput,
    skipSpecialTokens: request.skipSpecialTokens,
    ...(request.topLogprobs === undefined ? {} : { topLogprobs: request.topLogprobs }),
    script: opts.script,
    ...(opts.outputFormat === undefined ? {} : { outputFormat: opts.outputFormat }),
    merges: opts.merges,
  });
  checkContextLength(plan.promptTokens, request.maxTokens, opts);
  // With an output format the chat endpoint parses the answer (reasoning, tool calls).
  const parsed =
    kind === 'chat' && opts.outputFormat !== undefined
      ? { ...parseChat(plan, trace), callId: `chatcmpl-tool-${randomUUID().replaceAll('-', '')}` }
      : undefined;
  log.record(req, request, plan.promptTokens);
  const seq = await batch.admit(req, plan.promptTokens);
  if (!seq) {
    counters.aborted++;
    state.finishInference();
    return;
  }
  counters.prompt += plan.promptTokens;
  let done = false;
  res.once('close', () => {
    if (!done) {
      done = true;
      counters.aborted++;
      state.finishInference();
    }
    seq.release();
  });
  const end = (outcome: Outcome) => {
    if (done) return;
    done = true;
    counters[outcome]++;
    state.finishInference();
  };
  const addTokens = (n: number) => {
    batch.addTokens(seq, n);
    counters.generated += n;
  };
  if (opts.failRate > 0 && state.random() < opts.failRate) {
    end('failed');
    sendError(res, new HttpError(500, 'injected failure (fail-rate)', 'InternalServerError'));
    return;
  }
  const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;

  if (!request.stream) {
    // The whole answer comes when its last chunk would have been streamed.
    const chunks = plan.chunkIds.length;
    const total = opts.ttft + Math.max(0, chunks - 1) * tokenInterval(opts);
    seq.timer = setTimeout(() => {
      if (done) return;
      addTokens(chunks);
      end('completed');
      log.firstToken(req, plan.promptTokens);
      sendJson(res, 200, fullResponse(request, plan, id, nowSeconds(), parsed));
    }, total);
    return;
  }
  streamGeneration({
    res,
    request,
    plan,
    parsed,
    id,
    opts,
    seq,
    done: () => done,
    end,
    addToken: () => addTokens(1),
    onFirstToken: () => log.firstToken(req, plan.promptTokens),
    kill: state.kill,
  });
}
