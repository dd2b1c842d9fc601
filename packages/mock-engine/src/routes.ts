/**
 * The mock engine's URL space, as vLLM's OpenAI server has it: `/health`, `/metrics`,
 * `/v1/models`, the generation routes (`generate-route.ts`), `/v1/embeddings`,
 * `/tokenize` and `/detokenize`, the API key check, and the 404 and 405 answers.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { embed } from './embeddings.js';
import type { EngineState } from './engine-state.js';
import { encodePrompt } from './generation.js';
import { generate } from './generate-route.js';
import { readBody, sendJson } from './http-io.js';
import { renderMetrics } from './metrics.js';
import {
  HttpError,
  checkModel,
  parseDetokenizeRequest,
  parseEmbeddingRequest,
  parseTokenizeRequest,
} from './requests.js';
import { modelList, nowSeconds } from './responses.js';
import { decode, encode } from './tokenizer.js';

/** Answer one request; a thrown {@link HttpError} is the caller's to send. */
export async function route(
  state: EngineState,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const { opts, requests } = state;
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  requests[path] = (requests[path] ?? 0) + 1;
  if (opts.hang) return; // a hung engine: the connection stays open, nothing is answered
  const method = req.method ?? 'GET';
  const get = method === 'GET';
  const post = method === 'POST';
  if (path.startsWith('/v1/') && !authorized(state, req)) {
    throw new HttpError(401, 'Unauthorized: invalid or missing API key', 'AuthenticationError');
  }
  if (path === '/health' && get) {
    res.writeHead(200, { 'content-length': 0 });
    res.end();
  } else if (path === '/metrics' && get) {
    const text = renderMetrics(state.stats(), opts.servedModelNames[0] ?? opts.model);
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(text);
  } else if (path === '/v1/models' && get) sendJson(res, 200, modelList(opts, nowSeconds()));
  else if (path === '/v1/chat/completions' && post) await generate(state, req, res, 'chat');
  else if (path === '/v1/completions' && post) await generate(state, req, res, 'completion');
  else if (path === '/v1/embeddings' && post) await embeddings(state, req, res);
  else if (path === '/tokenize' && post) await tokenizeRoute(state, req, res);
  else if (path === '/detokenize' && post) await detokenizeRoute(state, req, res);
  else if (path.startsWith('/v1/models/') && get) {
    checkModel(decodeURIComponent(path.slice('/v1/models/'.length)), opts);
    sendJson(res, 200, modelList(opts, nowSeconds()));
  } else if (
    ['/health', '/metrics', '/v1/models', '/tokenize', '/detokenize'].includes(path) ||
    path.startsWith('/v1/')
  ) {
    sendJson(res, 405, { detail: 'Method Not Allowed' });
  } else sendJson(res, 404, { detail: 'Not Found' });
}

function authorized(state: EngineState, req: IncomingMessage): boolean {
  if (state.opts.apiKey === undefined) return true;
  return req.headers.authorization === `Bearer ${state.opts.apiKey}`;
}

async function tokenizeRoute(
  state: EngineState,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const request = parseTokenizeRequest(await readBody(req), state.opts);
  const tokens = encodePrompt(request.input, state.opts);
  sendJson(res, 200, {
    count: tokens.length,
    max_model_len: state.opts.maxModelLen,
    tokens,
    token_strs: request.returnTokenStrs ? tokens.map((t) => decode([t])) : null,
  });
}

async function detokenizeRoute(
  state: EngineState,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const tokens = parseDetokenizeRequest(await readBody(req), state.opts);
  sendJson(res, 200, { prompt: decode(tokens) });
}

async function embeddings(
  state: EngineState,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const request = parseEmbeddingRequest(await readBody(req), state.opts);
  let promptTokens = 0;
  const data = request.inputs.map((input, index) => {
    promptTokens += encode(input, state.opts).length;
    const vector = embed(input, state.opts.embeddingDims);
    const embedding = request.base64
      ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
      : vector;
    return { object: 'embedding', index, embedding };
  });
  state.counters.prompt += promptTokens;
  state.counters.completed++;
  state.finishInference();
  sendJson(res, 200, {
    id: `embd-${randomUUID().replaceAll('-', '')}`,
    object: 'list',
    created: nowSeconds(),
    model: request.model,
    data,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens, completion_tokens: 0 },
  });
}
