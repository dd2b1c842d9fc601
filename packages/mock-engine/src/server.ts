import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { embed } from './embeddings.js';
import { MockEngineError } from './errors.js';
import { codePoints, encodePrompt, expectedGeneration, promptTokenCount } from './generation.js';
import type { Generation, TokenLogprob } from './generation.js';
import { renderMetrics } from './metrics.js';
import type { MockEngineStats } from './metrics.js';
import { resolveOptions } from './options.js';
import type { MockEngineOptions, ResolvedOptions } from './options.js';
import {
  HttpError,
  badRequest,
  checkContextLength,
  checkModel,
  parseDetokenizeRequest,
  parseEmbeddingRequest,
  parseGenerationRequest,
  parseTokenizeRequest,
} from './requests.js';
import { createRequestLog } from './request-log.js';
import type { RequestLogRecord } from './request-log.js';
import type { GenerationRequest } from './requests.js';
import { decode, encode } from './tokenizer.js';

const utf8 = new TextEncoder();

/** A running (or loading) mock engine. */
export interface MockEngine {
  /** `http://host:port` once `listen()` resolved; throws `NOT_LISTENING` before. */
  readonly url: string;
  /** The underlying node:http server. */
  readonly server: Server;
  /** Wait `loadDelay`, then listen (default port 0, host 127.0.0.1); resolves to the URL. */
  listen(port?: number, host?: string): Promise<string>;
  /**
   * Like vLLM's `--uds`: wait `loadDelay`, then listen on the Unix socket `path` (which must
   * not exist); resolves to `unix:<path>`.
   */
  listenUnix(path: string): Promise<string>;
  /** Stop generating, drop every connection and close the port. */
  close(): Promise<void>;
  /**
   * Graceful shutdown, as uvicorn/vLLM do on SIGTERM: close the port, answer new requests on
   * kept-alive connections 503 (`Connection: close`), let the requests in flight (streams
   * included) finish for up to `timeoutMs` (default 30000), then {@link MockEngine.close}.
   */
  shutdown(timeoutMs?: number): Promise<void>;
  /** Current counters and gauges. */
  stats(): MockEngineStats;
  /** The inference requests received so far, oldest first (the latest 100,000). */
  requestLog(): readonly RequestLogRecord[];
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** One admitted generation, tracked for the gauges and for cancellation. */
interface Sequence {
  tokens: number;
  timer: NodeJS.Timeout | undefined;
  release: () => void;
}

interface Waiter {
  admit: () => void;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, error.status, error.body());
}

function readBody(req: IncomingMessage): Promise<unknown> {
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

/** mulberry32: a tiny seeded PRNG so `failRate` runs are reproducible. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Create an OpenAI-compatible engine that behaves like vLLM on the wire, with knobs for
 * speed and failure injection.
 * @example
 * const engine = createMockEngine({ model: 'mock', tokensPerSecond: 200 });
 * const url = await engine.listen(0, '127.0.0.1');
 * // ... point an OpenAI client at `${url}/v1`
 * await engine.close();
 */
export function createMockEngine(options: MockEngineOptions = {}): MockEngine {
  const opts: ResolvedOptions = resolveOptions(options);
  const random = seededRandom(opts.seed);
  const log = createRequestLog(opts.requestLogDir);
  const requests: Record<string, number> = {};
  const counters = { completed: 0, aborted: 0, failed: 0, killed: 0, prompt: 0, generated: 0 };
  const running = new Set<Sequence>();
  const waiting: Waiter[] = [];
  let kvTokens = 0;
  let answered = 0;
  let crashed = false;
  let url: string | undefined;
  let closing = false;
  // Graceful shutdown: requests being answered, and who waits for them to reach zero.
  let draining = false;
  let inFlight = 0;
  const idleWaiters: (() => void)[] = [];

  const crash =
    options.onCrash ??
    (() => {
      void close();
    });
  const kill =
    options.onKill ??
    (() => {
      void close();
    });

  const stats = (): MockEngineStats => ({
    requests: { ...requests },
    completed: counters.completed,
    aborted: counters.aborted,
    failed: counters.failed,
    killed: counters.killed,
    running: running.size,
    waiting: waiting.length,
    kvCacheUsage: Math.min(1, kvTokens / opts.kvCacheTokens),
    promptTokens: counters.prompt,
    generationTokens: counters.generated,
  });

  // Count an inference request as done (whatever its outcome) and crash when the
  // configured budget is spent: the response in flight is allowed to finish first.
  const finishInference = () => {
    answered++;
    if (opts.crashAfter !== undefined && answered >= opts.crashAfter && !crashed) {
      crashed = true;
      setImmediate(crash);
    }
  };

  /** Wait for a generation slot; resolves to a sequence, or undefined if the client left. */
  const admit = (req: IncomingMessage, promptTokens: number): Promise<Sequence | undefined> =>
    new Promise((resolve) => {
      const start = () => {
        const seq: Sequence = {
          tokens: promptTokens,
          timer: undefined,
          release: () => {
            if (!running.delete(seq)) return;
            if (seq.timer) clearTimeout(seq.timer);
            kvTokens -= seq.tokens;
            const next = waiting.shift();
            if (next) next.admit();
          },
        };
        running.add(seq);
        kvTokens += promptTokens;
        resolve(seq);
      };
      if (opts.maxNumSeqs === 0 || running.size < opts.maxNumSeqs) {
        start();
        return;
      }
      const waiter: Waiter = { admit: start };
      waiting.push(waiter);
      req.socket.once('close', () => {
        const i = waiting.indexOf(waiter);
        if (i !== -1) {
          waiting.splice(i, 1);
          resolve(undefined);
        }
      });
    });

  const addTokens = (seq: Sequence, n: number) => {
    seq.tokens += n;
    kvTokens += n;
    counters.generated += n;
  };

  const created = () => Math.floor(Date.now() / 1000);

  function usageOf(plan: Generation) {
    return {
      prompt_tokens: plan.promptTokens,
      total_tokens: plan.promptTokens + plan.completionTokens,
      completion_tokens: plan.completionTokens,
    };
  }

  function fullResponse(request: GenerationRequest, plan: Generation, id: string) {
    const tokenIds = request.returnTokenIds ? plan.ids : null;
    const promptIds = request.returnTokenIds ? plan.promptIds : null;
    const logprobs = logprobsOf(request, plan, 0, plan.ids.length, 0);
    const usage = { ...usageOf(plan), prompt_tokens_details: null };
    const end = { finish_reason: plan.finishReason, stop_reason: plan.stopReason };
    if (request.kind === 'chat') {
      return {
        id,
        object: 'chat.completion',
        created: created(),
        model: request.model,
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: plan.text,
              refusal: null,
              annotations: null,
              audio: null,
              function_call: null,
              tool_calls: [],
              reasoning_content: null,
            },
            logprobs,
            ...end,
            token_ids: tokenIds,
          },
        ],
        service_tier: null,
        system_fingerprint: null,
        usage,
        prompt_logprobs: null,
        prompt_token_ids: promptIds,
        kv_transfer_params: null,
      };
    }
    return {
      id,
      object: 'text_completion',
      created: created(),
      model: request.model,
      choices: [
        {
          index: 0,
          text: plan.text,
          logprobs,
          ...end,
          token_ids: tokenIds,
          prompt_logprobs: null,
          prompt_token_ids: promptIds,
        },
      ],
      service_tier: null,
      system_fingerprint: null,
      usage,
      kv_transfer_params: null,
    };
  }

  /**
   * The `logprobs` of ids `from .. to` of the plan (a chunk's, or all of them), in the
   * route's shape; `textOffset` is the completion's first `text_offset` (vLLM: the length
   * of the text streamed before the chunk).
   */
  function logprobsOf(
    request: GenerationRequest,
    plan: Generation,
    from: number,
    to: number,
    textOffset: number,
  ) {
    const k = request.topLogprobs;
    const top = plan.logprobs;
    if (k === undefined || top === undefined) return null;
    const entries = top.slice(from, to);
    if (request.kind === 'chat') {
      const candidate = (c: TokenLogprob) => {
        const token = decode([c.id]);
        return { token, logprob: c.logprob, bytes: [...utf8.encode(token)] };
      };
      return {
        content: entries.map((candidates) => ({
          ...candidate(candidates[0]!),
          top_logprobs: candidates.slice(0, k).map(candidate),
        })),
      };
    }
    // vLLM's completions logprobs: each text_offset adds the previous token's decoded length.
    const tokens = entries.map((candidates) => decode([candidates[0]!.id]));
    const offsets: number[] = [];
    let offset = textOffset;
    for (const token of tokens) {
      offsets.push(offset);
      offset += codePoints(token);
    }
    return {
      text_offset: offsets,
      token_logprobs: entries.map((candidates) => candidates[0]!.logprob),
      tokens,
      top_logprobs: entries.map((candidates) =>
        Object.fromEntries(candidates.map((c) => [decode([c.id]), c.logprob])),
      ),
    };
  }

  /** One SSE event of a stream, shaped as vLLM serializes it (chat: exclude_unset; completions: not). */
  function event(request: GenerationRequest, id: string, stamp: number, body: object): string {
    const head = { id, object: chunkObject(request.kind), created: stamp, model: request.model };
    return `data: ${JSON.stringify({ ...head, ...body })}\n\n`;
  }

  /** The stream's chunk of plan chunk `i` (ids `from .. from + n`), the final one if `last`. */
  function tokenChunk(
    request: GenerationRequest,
    plan: Generation,
    i: number,
    from: number,
    textOffset: number,
    text: string,
    last: boolean,
  ): object {
    const ids = plan.chunkIds[i] ?? [];
    const logprobs = logprobsOf(request, plan, from, from + ids.length, textOffset);
    const tokenIds = request.returnTokenIds ? ids : null;
    const end = last
      ? { finish_reason: plan.finishReason, stop_reason: plan.stopReason }
      : { finish_reason: null };
    if (request.kind === 'chat') {
      return {
        choices: [{ index: 0, delta: { content: text }, logprobs, ...end, token_ids: tokenIds }],
      };
    }
    return {
      choices: [
        {
          index: 0,
          text,
          logprobs,
          finish_reason: end.finish_reason,
          stop_reason: last ? plan.stopReason : null,
          prompt_token_ids: request.returnTokenIds && i === 0 ? plan.promptIds : null,
          token_ids: tokenIds,
        },
      ],
      usage: null,
    };
  }

  async function generate(
    req: IncomingMessage,
    res: ServerResponse,
    kind: 'chat' | 'completion',
  ): Promise<void> {
    const request = parseGenerationRequest(kind, await readBody(req), opts);
    // A prompt past the context length is refused before any generation work: making the
    // ids of a 30 MB prompt blocked this process for seconds (its /health unanswered).
    const promptTokens = promptTokenCount(request.input);
    if (promptTokens > opts.maxModelLen) checkContextLength(promptTokens, request.maxTokens, opts);
    // The one definition of the output. Capped at the context length so that an oversized
    // max_tokens costs nothing before its 400 (a valid one is never above it).
    const plan = expectedGeneration(request.input, {
      maxTokens: Math.min(request.maxTokens, opts.maxModelLen),
      stop: request.stop,
      stopTokenIds: request.stopTokenIds,
      minTokens: request.minTokens,
      includeStopStrInOutput: request.includeStopStrInOutput,
      ...(request.topLogprobs === undefined ? {} : { topLogprobs: request.topLogprobs }),
      script: opts.script,
    });
    checkContextLength(plan.promptTokens, request.maxTokens, opts);
    log.record(req, request, plan.promptTokens);
    const seq = await admit(req, plan.promptTokens);
    if (!seq) {
      counters.aborted++;
      finishInference();
      return;
    }
    counters.prompt += plan.promptTokens;
    let done = false;
    res.once('close', () => {
      if (!done) {
        done = true;
        counters.aborted++;
        finishInference();
      }
      seq.release();
    });
    const end = (outcome: 'completed' | 'failed' | 'killed') => {
      if (done) return;
      done = true;
      counters[outcome]++;
      finishInference();
    };
    if (opts.failRate > 0 && random() < opts.failRate) {
      end('failed');
      sendError(res, new HttpError(500, 'injected failure (fail-rate)', 'InternalServerError'));
      return;
    }
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
    const interval = opts.tokensPerSecond > 0 ? 1000 / opts.tokensPerSecond : 0;
    const chunks = plan.chunkIds.length;

    if (!request.stream) {
      const total = opts.ttft + Math.max(0, chunks - 1) * interval;
      seq.timer = setTimeout(() => {
        if (done) return;
        addTokens(seq, chunks);
        end('completed');
        log.firstToken(req, plan.promptTokens);
        sendJson(res, 200, fullResponse(request, plan, id));
      }, total);
      return;
    }

    const stamp = created();
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
    });
    if (kind === 'chat') {
      const role = { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null };
      res.write(
        event(request, id, stamp, {
          choices: [{ ...role, finish_reason: null }],
          prompt_token_ids: request.returnTokenIds ? plan.promptIds : null,
        }),
      );
    }
    const firstAt = Date.now() + opts.ttft;
    let sent = 0;
    let idsSent = 0;
    let textSent = 0;
    // An answer of no chunk (an empty script answer) still sends one, with the finish.
    const last = Math.max(1, chunks);
    // --drop-chunk: the Nth chunk is never sent; if its text is "" (a byte inside a character),
    // the fault moves to the next chunk with text, so the client's text always loses something.
    let drop = opts.dropChunk === undefined ? -1 : opts.dropChunk - 1;
    while (drop >= 0 && drop < chunks - 1 && plan.deltas[drop] === '') drop++;

    const tick = () => {
      seq.timer = undefined;
      if (done) return;
      const due =
        interval === 0 ? last : Math.min(last, Math.floor((Date.now() - firstAt) / interval) + 1);
      let out = '';
      while (sent < due) {
        // Written before the chunk goes out: an engine killed right after it keeps the line.
        if (sent === 0) log.firstToken(req, plan.promptTokens);
        const isLast = sent === last - 1;
        // A dropped final chunk is still sent, empty, with the finish.
        const dropped = drop === sent;
        const text = dropped ? '' : (plan.deltas[sent] ?? '');
        if (!dropped || isLast) {
          const body = tokenChunk(request, plan, sent, idsSent, textSent, text, isLast);
          out += event(request, id, stamp, body);
        }
        idsSent += plan.chunkIds[sent]?.length ?? 0;
        textSent += codePoints(plan.deltas[sent] ?? '');
        if (sent < chunks) addTokens(seq, 1);
        sent++;
        if (opts.killMidStream !== undefined && sent >= opts.killMidStream && !isLast) {
          // The chunks reach the socket first, then the process dies (no FIN, no goodbye).
          res.write(out, kill);
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
          out += event(request, id, stamp, { choices: [], usage: usageOf(plan) });
        }
        out += 'data: [DONE]\n\n';
        end('completed');
        res.end(out);
        return;
      }
      const nextAt = firstAt + sent * interval;
      const schedule = () => {
        if (!done) seq.timer = setTimeout(tick, Math.max(0, nextAt - Date.now()));
      };
      // Respect backpressure: a slow reader must not make the engine buffer without bound.
      if (out.length > 0 && !res.write(out)) res.once('drain', schedule);
      else schedule();
    };
    seq.timer = setTimeout(tick, opts.ttft);
  }

  async function tokenizeRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const request = parseTokenizeRequest(await readBody(req), opts);
    const tokens = encodePrompt(request.input);
    sendJson(res, 200, {
      count: tokens.length,
      max_model_len: opts.maxModelLen,
      tokens,
      token_strs: request.returnTokenStrs ? tokens.map((t) => decode([t])) : null,
    });
  }

  async function detokenizeRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const tokens = parseDetokenizeRequest(await readBody(req), opts);
    sendJson(res, 200, { prompt: decode(tokens) });
  }

  async function embeddings(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const request = parseEmbeddingRequest(await readBody(req), opts);
    let promptTokens = 0;
    const data = request.inputs.map((input, index) => {
      promptTokens += encode(input).length;
      const vector = embed(input, opts.embeddingDims);
      const embedding = request.base64
        ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
        : vector;
      return { object: 'embedding', index, embedding };
    });
    counters.prompt += promptTokens;
    counters.completed++;
    finishInference();
    sendJson(res, 200, {
      id: `embd-${randomUUID().replaceAll('-', '')}`,
      object: 'list',
      created: created(),
      model: request.model,
      data,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens, completion_tokens: 0 },
    });
  }

  function models(res: ServerResponse): void {
    const stamp = created();
    sendJson(res, 200, {
      object: 'list',
      data: opts.servedModelNames.map((id) => ({
        id,
        object: 'model',
        created: stamp,
        owned_by: 'vllm',
        root: opts.model,
        parent: null,
        max_model_len: opts.maxModelLen,
        permission: [],
      })),
    });
  }

  function authorized(req: IncomingMessage): boolean {
    if (opts.apiKey === undefined) return true;
    return req.headers.authorization === `Bearer ${opts.apiKey}`;
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    requests[path] = (requests[path] ?? 0) + 1;
    if (opts.hang) return; // a hung engine: the connection stays open, nothing is answered
    const method = req.method ?? 'GET';
    const get = method === 'GET';
    const post = method === 'POST';
    if (path.startsWith('/v1/') && !authorized(req)) {
      throw new HttpError(401, 'Unauthorized: invalid or missing API key', 'AuthenticationError');
    }
    if (path === '/health' && get) {
      res.writeHead(200, { 'content-length': 0 });
      res.end();
    } else if (path === '/metrics' && get) {
      const text = renderMetrics(stats(), opts.servedModelNames[0] ?? opts.model);
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(text);
    } else if (path === '/v1/models' && get) models(res);
    else if (path === '/v1/chat/completions' && post) await generate(req, res, 'chat');
    else if (path === '/v1/completions' && post) await generate(req, res, 'completion');
    else if (path === '/v1/embeddings' && post) await embeddings(req, res);
    else if (path === '/tokenize' && post) await tokenizeRoute(req, res);
    else if (path === '/detokenize' && post) await detokenizeRoute(req, res);
    else if (path.startsWith('/v1/models/') && get) {
      checkModel(decodeURIComponent(path.slice('/v1/models/'.length)), opts);
      models(res);
    } else if (
      ['/health', '/metrics', '/v1/models', '/tokenize', '/detokenize'].includes(path) ||
      path.startsWith('/v1/')
    ) {
      sendJson(res, 405, { detail: 'Method Not Allowed' });
    } else sendJson(res, 404, { detail: 'Not Found' });
  }

  const server = createServer((req, res) => {
    if (draining) {
      // What uvicorn does with a request on a kept-alive connection once it is shutting down.
      res.setHeader('connection', 'close');
      sendError(res, new HttpError(503, 'the engine is shutting down', 'ServiceUnavailableError'));
      return;
    }
    inFlight++;
    res.once('close', () => {
      inFlight--;
      if (inFlight === 0) for (const wake of idleWaiters.splice(0)) wake();
    });
    route(req, res).catch((error: unknown) => {
      if (error instanceof HttpError) sendError(res, error);
      else sendError(res, new HttpError(500, String(error), 'InternalServerError'));
    });
  });
  // Streams may last minutes; node's default request timeout would cut them.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 30_000;

  async function close(): Promise<void> {
    closing = true;
    for (const seq of [...running]) seq.release();
    waiting.length = 0;
    server.closeAllConnections();
    if (!server.listening) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async function shutdown(timeoutMs = 30_000): Promise<void> {
    if (!draining) {
      draining = true;
      // Stop accepting; connections with nothing in flight go now, the others after their answer.
      if (server.listening) server.close();
      server.closeIdleConnections();
    }
    if (inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        idleWaiters.push(resolve);
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    await close();
  }

  /** Waits `loadDelay` (loading weights), then binds. */
  async function bind(where: { port: number; host: string } | { path: string }): Promise<void> {
    if (opts.loadDelay > 0) await new Promise((r) => setTimeout(r, opts.loadDelay));
    if (closing) throw new MockEngineError('NOT_LISTENING', 'closed while loading');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(where, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  return {
    get url() {
      if (url === undefined) {
        throw new MockEngineError('NOT_LISTENING', 'the mock engine is not listening yet');
      }
      return url;
    },
    server,
    async listen(port = 0, host = '127.0.0.1') {
      await bind({ port, host });
      const address = server.address();
      const actual = typeof address === 'object' && address ? address.port : port;
      url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}`;
      return url;
    },
    async listenUnix(path) {
      await bind({ path });
      url = `unix:${path}`;
      return url;
    },
    close,
    shutdown,
    stats,
    requestLog: () => [...log.records],
  };
}

function chunkObject(kind: 'chat' | 'completion'): string {
  return kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
}
