/**
 * Generations that survive their worker: real mock-engine processes (the project's vLLM
 * stand-in, with vLLM's token ids, detokenizer and stop rules) behind the proxy on a real
 * socket, driven by the official `openai` client. A cut (connection cut after k tokens,
 * SIGKILL, SIGSTOP) must leave the client with exactly the uncut response — the engine's
 * own definition of it, `expectedGeneration` — and the engines' request logs must show a
 * continuation (same request id, prompt = prompt + generated ids), never a restart.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { decode, expectedGeneration } from '@es/mock-engine';
import type { GenerationInput } from '@es/mock-engine';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, startProxyServer } from '../src/index.js';
import { KEY, cleanups, rig, runCleanups, startEngine, type Engine } from './continuation-rig.js';
import { createStaticPool, deploymentView } from './static-pool.js';
import { until } from './harness.js';

afterEach(runCleanups);

const MAX = 24;
const PROMPT = 'Write about elastic clusters';
const inputOf = (kind: 'chat' | 'completion'): GenerationInput =>
  kind === 'chat'
    ? { kind: 'chat', messages: [{ role: 'user', content: PROMPT }] }
    : { kind: 'completion', prompt: PROMPT };

interface Answer {
  text: string;
  finish: string | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined;
  errors: number;
}

/** One generation through the proxy, streamed or not, read the way a client reads it. */
async function generate(
  client: OpenAI,
  kind: 'chat' | 'completion',
  stream: boolean,
  extra: Record<string, unknown> = {},
  onChunk?: (n: number) => void,
): Promise<Answer> {
  const params = { model: 'llama', max_tokens: MAX, temperature: 0, ...extra };
  if (kind === 'chat') {
    const messages = [{ role: 'user' as const, content: PROMPT }];
    if (!stream) {
      const r = await client.chat.completions.create({ ...params, messages });
      return {
        text: r.choices[0]!.message.content ?? '',
        finish: r.choices[0]!.finish_reason,
        usage: r.usage,
        errors: 0,
      };
    }
    const answer: Answer = { text: '', finish: null, usage: undefined, errors: 0 };
    let n = 0;
    const s = await client.chat.completions.create({
      ...params,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of s) {
      const choice = chunk.choices[0];
      if (choice !== undefined) {
        answer.text += choice.delta.content ?? '';
        if (choice.finish_reason !== null) answer.finish = choice.finish_reason;
        if ((choice.delta.content ?? '') !== '') onChunk?.(++n);
      }
      if (chunk.usage) answer.usage = chunk.usage;
    }
    return answer;
  }
  if (!stream) {
    const r = await client.completions.create({ ...params, prompt: PROMPT });
    return {
      text: r.choices[0]!.text,
      finish: r.choices[0]!.finish_reason,
      usage: r.usage,
      errors: 0,
    };
  }
  const answer: Answer = { text: '', finish: null, usage: undefined, errors: 0 };
  let n = 0;
  const s = await client.completions.create({
    ...params,
    prompt: PROMPT,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of s) {
    const choice = chunk.choices[0];
    if (choice !== undefined) {
      answer.text += choice.text;
      if (choice.finish_reason !== null) answer.finish = choice.finish_reason;
      if (choice.text !== '') onChunk?.(++n);
    }
    if (chunk.usage) answer.usage = chunk.usage;
  }
  return answer;
}

/** The uncut answer, by the engine's own definition. */
function uncut(kind: 'chat' | 'completion', limits: { stop?: string[] } = {}): Answer {
  const g = expectedGeneration(inputOf(kind), { maxTokens: MAX, ...limits });
  return {
    text: g.text,
    finish: g.finishReason,
    usage: {
      prompt_tokens: g.promptTokens,
      completion_tokens: g.completionTokens,
      total_tokens: g.promptTokens + g.completionTokens,
    },
    errors: 0,
  };
}

/**
 * The first engine is cut after k tokens — its process SIGKILLs itself (`kill`) or it cuts
 * the connection (`die`); the second is added once the first has the request.
 */
async function cutAfter(
  k: number,
  kind: 'chat' | 'completion',
  stream: boolean,
  extra: Record<string, unknown> = {},
  how: 'kill' | 'die' = 'die',
) {
  const flag = how === 'kill' ? '--kill-mid-stream' : '--die-mid-stream';
  const first = await startEngine('first', flag, String(k), '--tokens-per-second', '400');
  const second = await startEngine('second', '--tokens-per-second', '400');
  const r = await rig([first]);
  const pending = generate(r.client, kind, stream, extra);
  await until(() => first.requests().length > 0);
  r.add(second);
  return { answer: await pending, first, second, r };
}

describe('a generation cut after k tokens is continued on another worker, token-exact', () => {
  const cases = [];
  for (const kind of ['chat', 'completion'] as const) {
    for (const stream of [true, false]) {
      for (const k of [1, 12, MAX - 1]) cases.push({ kind, stream, k, how: 'kill' as const });
    }
  }
  // The same cut as a closed connection, the engine alive (its worker may keep it routable).
  cases.push({ kind: 'chat' as const, stream: true, k: 12, how: 'die' as const });
  cases.push({ kind: 'completion' as const, stream: false, k: 1, how: 'die' as const });
  for (const { kind, stream, k, how } of cases) {
    const cut = how === 'kill' ? 'engine SIGKILLed' : 'connection cut';
    it(`${kind}, ${stream ? 'streaming' : 'not streaming'}, ${cut} after ${k} tokens`, async () => {
      const { answer, first, second, r } = await cutAfter(k, kind, stream, {}, how);
      expect(answer).toEqual(uncut(kind));
      // The second engine continued: same request, prompt + the k generated ids, the
      // rest of max_tokens; nobody started the generation again.
      const promptTokens = expectedGeneration(inputOf(kind), { maxTokens: 1 }).promptTokens;
      expect(first.requests()).toHaveLength(1);
      const [continued, ...more] = second.requests();
      expect(more).toEqual([]);
      expect(continued).toMatchObject({
        path: '/v1/completions',
        requestId: first.requests()[0]!.requestId,
        promptTokens: promptTokens + k,
        maxTokens: MAX - k,
      });
      expect(r.continuations).toMatchObject([
        { outcome: 'continued', fromWorker: 'first', toWorker: 'second', generatedTokens: k },
      ]);
      expect(r.records).toMatchObject([{ outcome: 'ok', status: 200, continuations: 1 }]);
    });
  }
});

/** Two engines at 40 tokens/s behind one proxy: the one that serves gets the fault. */
async function pair() {
  const engines = [
    await startEngine('a', '--tokens-per-second', '40'),
    await startEngine('b', '--tokens-per-second', '40'),
  ];
  const r = await rig(engines);
  const serving = () => engines.find((e) => e.requests().length > 0)!;
  const other = (engine: Engine) => engines.find((e) => e !== engine)!;
  return { engines, r, serving, other };
}

describe('faults of real processes', () => {
  it('SIGKILL of the engine mid-stream: the stream goes on, identical', async () => {
    const { r, serving, other } = await pair();
    let killed: Engine | undefined;
    const answer = await generate(r.client, 'chat', true, {}, (n) => {
      if (n !== 8 || killed !== undefined) return;
      killed = serving();
      killed.child.kill('SIGKILL');
    });
    expect(killed).toBeDefined();
    expect(answer).toEqual(uncut('chat'));
    const survivor = other(killed!);
    expect(survivor.requests()).toMatchObject([{ path: '/v1/completions' }]);
    expect(r.continuations).toMatchObject([
      { outcome: 'continued', reason: 'connection', toWorker: survivor.name },
    ]);
  });

  it('SIGKILL of the engine during a non-streaming generation: the answer is whole', async () => {
    const { engines, r, serving, other } = await pair();
    const pending = generate(r.client, 'completion', false);
    await until(() => engines.some((e) => e.requests().length > 0));
    await new Promise((resolve) => setTimeout(resolve, 250));
    const killed = serving();
    killed.child.kill('SIGKILL');
    expect(await pending).toEqual(uncut('completion'));
    expect(other(killed).requests()).toMatchObject([{ path: '/v1/completions' }]);
  });

  it('SIGSTOP (a stalled engine): continued elsewhere after the stall timeout', async () => {
    const { r, serving } = await pair();
    let stopped: Engine | undefined;
    const answer = await generate(r.client, 'completion', true, {}, (n) => {
      if (n !== 5 || stopped !== undefined) return;
      stopped = serving();
      stopped.child.kill('SIGSTOP');
    });
    expect(answer).toEqual(uncut('completion'));
    expect(r.continuations).toMatchObject([{ outcome: 'continued', reason: 'stall' }]);
    expect(r.continuations[0]!.waitMs).toBeGreaterThan(0);
  });

  it('a worker the pool loses mid-stream (gone, failed): continued at once', async () => {
    const { r, serving } = await pair();
    let lost: Engine | undefined;
    const answer = await generate(r.client, 'chat', true, {}, (n) => {
      if (n !== 3 || lost !== undefined) return;
      lost = serving();
      r.pool.lose(lost.name, 'heartbeat timeout');
    });
    expect(answer).toEqual(uncut('chat'));
    expect(r.continuations).toMatchObject([{ outcome: 'continued', reason: 'worker-lost' }]);
  });
});

describe('exact at the edges of a splice', () => {
  it('a stop string spanning the cut is found, held-back text neither lost nor doubled', async () => {
    const full = expectedGeneration(inputOf('completion'), { maxTokens: MAX });
    // A stop string from the end of token 9 into token 11: the cut after 10 tokens falls
    // inside it, and the first engine holds its beginning back.
    const before = full.deltas.slice(0, 9).join('');
    const through = full.deltas.slice(0, 11).join('');
    const stop = through.slice(before.length - 2);
    const limits = { stop: [stop] };
    const { answer, second } = await cutAfter(10, 'completion', true, { stop: [stop] });
    expect(answer).toEqual(uncut('completion', limits));
    expect(answer.finish).toBe('stop');
    expect(second.requests()).toHaveLength(1);
  });

  it('a character made of several tokens, split by the cut, arrives whole and once', async () => {
    // Find a prompt whose generation has a multi-token character, and cut inside it.
    let prompt = '';
    let k = -1;
    for (let i = 0; i < 200 && k < 0; i++) {
      prompt = `Tell story ${i}`;
      const g = expectedGeneration({ kind: 'completion', prompt }, { maxTokens: MAX });
      k = g.deltas.findIndex((d, j) => d === '' && j > 0 && j < MAX - 1) + 1;
      if (k === 0) k = -1;
    }
    expect(k).toBeGreaterThan(0);
    const first = await startEngine(
      'first',
      '--die-mid-stream',
      String(k),
      '--tokens-per-second',
      '400',
    );
    const second = await startEngine('second', '--tokens-per-second', '400');
    const r = await rig([first]);
    let text = '';
    let chunks = 0;
    const pending = (async () => {
      const s = await r.client.completions.create({
        model: 'llama',
        prompt,
        max_tokens: MAX,
        stream: true,
      });
      for await (const chunk of s) {
        text += chunk.choices[0]?.text ?? '';
        chunks++;
      }
    })();
    await until(() => first.requests().length > 0);
    r.add(second);
    await pending;
    const g = expectedGeneration({ kind: 'completion', prompt }, { maxTokens: MAX });
    expect(text).toBe(g.text);
    expect(text).toBe(decode(g.ids));
    expect(text).not.toContain('\ufffd');
    expect(chunks).toBeGreaterThan(1);
    expect(second.requests()[0]).toMatchObject({ maxTokens: MAX - k });
  });

  it('logprobs are stitched: the same as an uncut generation (completions and chat)', async () => {
    const direct = await startEngine('direct', '--tokens-per-second', '0');
    const engine = new OpenAI({ baseURL: `${direct.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const completion = { model: 'llama', prompt: PROMPT, max_tokens: MAX, logprobs: 2 };
    const messages = [{ role: 'user' as const, content: PROMPT }];
    const chat = { model: 'llama', messages, max_tokens: MAX, logprobs: true, top_logprobs: 2 };
    const reference = await engine.completions.create(completion);
    const chatReference = await engine.chat.completions.create(chat);

    const first = await startEngine('first', '--die-mid-stream', '7', '--tokens-per-second', '400');
    const second = await startEngine('second', '--tokens-per-second', '400');
    const r = await rig([first]);
    const pending = Promise.all([
      r.client.completions.create(completion, { headers: { 'x-request-id': 'cmpl-req' } }),
      r.client.chat.completions.create(chat, { headers: { 'x-request-id': 'chat-req' } }),
    ]);
    await until(() => first.requests().length === 2);
    r.add(second);
    const [stitched, chatStitched] = await pending;
    expect(stitched.choices[0]!.logprobs).toEqual(reference.choices[0]!.logprobs);
    expect(stitched.choices[0]!.text).toBe(reference.choices[0]!.text);
    const outcome = (id: string) => r.continuations.find((c) => c.requestId === id);
    expect(outcome('cmpl-req')).toMatchObject({ outcome: 'continued' });
    // Chat: every chosen token, its logprob and bytes are exact; a top candidate list is
    // exact unless two candidates share their text (completions keys them by text), and
    // then the continuation says so (inexact, top_logprobs).
    const got = chatStitched.choices[0]!.logprobs!.content!;
    const want = chatReference.choices[0]!.logprobs!.content!;
    const chosen = (entries: typeof got) =>
      entries.map((e) => ({ token: e.token, logprob: e.logprob, bytes: e.bytes }));
    expect(chosen(got)).toEqual(chosen(want));
    const shared = (e: (typeof want)[number]) =>
      new Set(e.top_logprobs.map((t) => t.token)).size < e.top_logprobs.length;
    want.forEach((e, i) => {
      if (!shared(e)) expect(got[i]!.top_logprobs).toEqual(e.top_logprobs);
    });
    const collided = want.slice(7).some(shared);
    expect(outcome('chat-req')).toMatchObject(
      collided ? { outcome: 'inexact', reason: 'top_logprobs' } : { outcome: 'continued' },
    );
  });
});

describe('what is not continued', () => {
  it('a refused request (structured output) cut mid-stream ends with an error event, counted by reason', async () => {
    const first = await startEngine('first', '--die-mid-stream', '3', '--tokens-per-second', '400');
    const second = await startEngine('second', '--tokens-per-second', '400');
    const r = await rig([first, second]);
    r.pool.remove('second');
    const stream = await r.client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: MAX,
      stream: true,
      response_format: { type: 'json_object' },
    });
    await expect(
      (async () => {
        for await (const chunk of stream) void chunk;
      })(),
    ).rejects.toThrow(/failed mid-response/);
    expect(r.continuations).toMatchObject([{ outcome: 'refused', reason: 'structured_output' }]);
    expect(second.requests()).toEqual([]);
  });

  it('stops after --max-continuations and says so', async () => {
    const a = await startEngine('a', '--die-mid-stream', '3', '--tokens-per-second', '400');
    const b = await startEngine('b', '--die-mid-stream', '2', '--tokens-per-second', '400');
    const r = await rig([a, b], { maxContinuations: 1 });
    await expect(generate(r.client, 'completion', true)).rejects.toThrow(/failed mid-response/);
    expect(r.continuations.map((c) => c.outcome)).toEqual(['continued', 'failed']);
    expect(r.continuations[1]).toMatchObject({ reason: 'max-continuations' });
    expect(r.records).toMatchObject([{ outcome: 'mid-stream-failure', continuations: 1 }]);
  });
});

describe('the planted fault continue-from-scratch (proves the checks can fail)', () => {
  it('repeats text and shows as a restart in the engines request logs', async () => {
    const first = await startEngine('first', '--die-mid-stream', '6', '--tokens-per-second', '400');
    const second = await startEngine('second', '--tokens-per-second', '400');
    const pool = createStaticPool([
      deploymentView('llama', 'least-outstanding', { upstreamApiKey: KEY }),
    ]);
    const app = createProxyApp({ pool, plantedFaults: { continueFromScratch: true } });
    const server = await startProxyServer({ fetch: app.fetch });
    cleanups.push(async () => {
      await server.close(0);
      await app.close();
    });
    pool.add({ id: 'first', deployment: 'llama', baseUrl: first.url });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
    const pending = generate(client, 'completion', true);
    await until(() => first.requests().length > 0);
    pool.add({ id: 'second', deployment: 'llama', baseUrl: second.url });
    const answer = await pending;
    expect(answer.text).not.toBe(uncut('completion').text);
    expect(second.requests()[0]!.promptTokens).toBe(first.requests()[0]!.promptTokens);
  });
});

/** A hand-written engine on 127.0.0.1 (for the exact timing a mock engine cannot give). */
async function inlineEngine(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** One `text_completion` SSE event. */
const completionEvent = (choice: Record<string, unknown>) =>
  `data: ${JSON.stringify({ id: 'cmpl-x', object: 'text_completion', created: 1, model: 'llama', choices: [{ index: 0, logprobs: null, finish_reason: null, stop_reason: null, prompt_token_ids: null, ...choice }] })}\n\n`;

describe('when the only ready worker is the one that cut the stream', () => {
  it('continues on it again after a second (an engine that cut a connection but lives on)', async () => {
    const only = await startEngine('only', '--die-mid-stream', '12', '--tokens-per-second', '400');
    const r = await rig([only]);
    const answer = await generate(r.client, 'chat', true);
    expect(answer).toEqual(uncut('chat'));
    expect(r.continuations).toMatchObject([
      { outcome: 'continued', fromWorker: 'only', toWorker: 'only', generatedTokens: 12 },
    ]);
    expect(r.continuations[0]!.waitMs).toBeGreaterThanOrEqual(1_000);
    expect(only.requests().map((q) => q.path)).toEqual(['/v1/chat/completions', '/v1/completions']);
  });
});

describe('a worker that leaves routing while it answers /detokenize', () => {
  it('gets no continuation: the proxy picks again', async () => {
    const r = await rig([]);
    const first = await inlineEngine((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(completionEvent({ text: 'a', prompt_token_ids: [1], token_ids: [7] }), () =>
        setTimeout(() => res.destroy(), 20),
      );
    });
    const seen: string[] = [];
    const answer = (name: string) => (req: IncomingMessage, res: ServerResponse) => {
      seen.push(`${name} ${req.url ?? ''}`);
      if (req.url === '/detokenize') {
        if (name === 'leaving') {
          r.pool.remove('leaving');
          r.add({ name: 'staying', url: stayingUrl } as Engine);
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ prompt: 'a' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        `${completionEvent({ text: 'b', token_ids: [8], finish_reason: 'length' })}data: [DONE]\n\n`,
      );
    };
    const leavingUrl = await inlineEngine(answer('leaving'));
    const stayingUrl = await inlineEngine(answer('staying'));
    r.pool.add({ id: 'first', deployment: 'llama', baseUrl: first });
    const stream = await r.client.completions.create({
      model: 'llama',
      prompt: 'x',
      max_tokens: 2,
      stream: true,
    });
    r.pool.add({ id: 'leaving', deployment: 'llama', baseUrl: leavingUrl });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe('ab');
    expect(seen).toEqual(['leaving /detokenize', 'staying /detokenize', 'staying /v1/completions']);
    expect(r.continuations).toMatchObject([{ outcome: 'continued', toWorker: 'staying' }]);
  });
});

describe('a cut after the last token of max_tokens, before the finish', () => {
  it('is finished by the proxy: the held-back text from /detokenize, finish length, no upstream call', async () => {
    // An engine that streams all 3 tokens of max_tokens 3, holding the last one's text back
    // (the start of a possible stop string), then dies before its finish chunk.
    const seen: string[] = [];
    const first = await inlineEngine((req, res) => {
      seen.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(completionEvent({ text: 'ab', prompt_token_ids: [1, 2], token_ids: [7] }));
      res.write(completionEvent({ text: ' ', token_ids: [8] }));
      res.write(completionEvent({ text: '', token_ids: [9] }), () =>
        setTimeout(() => res.destroy(), 20),
      );
    });
    const other = await inlineEngine((req, res) => {
      seen.push(`other ${req.url ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ prompt: 'ab END' }));
    });
    const r = await rig([]);
    r.pool.add({ id: 'first', deployment: 'llama', baseUrl: first });
    const pending = r.client.completions.create({
      model: 'llama',
      prompt: 'x',
      max_tokens: 3,
      stop: ['ENDX'],
      stream: true,
      stream_options: { include_usage: true },
    });
    const stream = await pending;
    r.pool.add({ id: 'second', deployment: 'llama', baseUrl: other });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('ab END');
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
    // Only /detokenize on the second worker: nothing was left to generate.
    expect(seen.filter((s) => s.startsWith('other'))).toEqual(['other /detokenize']);
    expect(r.continuations).toMatchObject([{ outcome: 'continued', toWorker: 'second' }]);
  });
});
