/**
 * Field-by-field shapes of what the engine sends, as vLLM (main at 003fe59) serializes them:
 * chat chunks with `exclude_unset` (set-to-None fields stay as null), completion chunks with
 * every field, non-streaming bodies with `model_dump()`; plus the routes and fields the proxy's
 * continuation needs (return_token_ids, /tokenize, /detokenize, stop strings, logprobs).
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  continuationInput,
  createMockEngine,
  decode,
  encode,
  encodePrompt,
  expectedGeneration,
} from '../src/index.js';
import type { GenerationInput, MockEngine, MockEngineOptions } from '../src/index.js';

const engines: MockEngine[] = [];

async function start(options: MockEngineOptions = {}) {
  const engine = createMockEngine({ tokensPerSecond: 0, ttft: 0, ...options });
  engines.push(engine);
  return { engine, url: await engine.listen(0, '127.0.0.1') };
}

afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

type Json = Record<string, unknown>;

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

/** The events of an SSE response, parsed, and whether it ended with `[DONE]`. */
async function sse(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ ...(body as Json), stream: true }),
  });
  // Read chunk by chunk: a stream cut by the engine ends in an error after its last events.
  let raw = '';
  const decoder = new TextDecoder();
  try {
    for await (const part of res.body!) raw += decoder.decode(part, { stream: true });
  } catch {
    // the connection was destroyed: keep what arrived
  }
  const datas = raw
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
  const done = datas.at(-1) === '[DONE]';
  const events = datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d) as Json);
  return { events, done, raw };
}

const ask = [{ role: 'user', content: 'Hello there' }];
const chatInput: GenerationInput = { kind: 'chat', messages: ask };

const head = (kind: 'chat' | 'completion') => ({
  id: expect.stringMatching(kind === 'chat' ? /^chatcmpl-/ : /^cmpl-/),
  object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
  created: expect.any(Number),
  model: 'mock-model',
});

/** A chat whose 32-token answer has a character of several bytes; `k` cuts inside it. */
function cutInsideCharacter(): { input: GenerationInput; k: number } {
  for (let i = 0; ; i++) {
    const input: GenerationInput = { kind: 'chat', messages: [{ role: 'user', content: `q${i}` }] };
    const { ids } = expectedGeneration(input, { maxTokens: 32 });
    const k = ids.findIndex((id, j) => j >= 2 && j < 28 && id >= 0x80 && id < 0xc0);
    if (k !== -1) return { input, k };
  }
}

describe('chat streaming, field by field', () => {
  it('with return_token_ids: prompt_token_ids in the role chunk only, token_ids per chunk', async () => {
    const { url } = await start();
    const plan = expectedGeneration(chatInput, { maxTokens: 6 });
    const { events, done } = await sse(`${url}/v1/chat/completions`, {
      messages: ask,
      max_tokens: 6,
      return_token_ids: true,
      stream_options: { include_usage: true },
    });
    expect(done).toBe(true);
    const [role, ...rest] = events;
    const usage = rest.pop();
    expect(role).toStrictEqual({
      ...head('chat'),
      choices: [
        {
          index: 0,
          delta: { role: 'assistant', content: '' },
          logprobs: null,
          finish_reason: null,
        },
      ],
      prompt_token_ids: plan.promptIds,
    });
    expect(rest).toHaveLength(6);
    rest.forEach((chunk, i) => {
      const last = i === 5;
      expect(chunk, `chunk ${i}`).toStrictEqual({
        ...head('chat'),
        id: role!.id,
        created: role!.created,
        choices: [
          {
            index: 0,
            delta: { content: plan.deltas[i] },
            logprobs: null,
            finish_reason: last ? 'length' : null,
            ...(last ? { stop_reason: null } : {}),
            token_ids: [plan.ids[i]],
          },
        ],
      });
    });
    // vLLM's field order (pydantic declaration order).
    const final = (rest[5]!.choices as Json[])[0]!;
    expect(Object.keys(final)).toEqual([
      'index',
      'delta',
      'logprobs',
      'finish_reason',
      'stop_reason',
      'token_ids',
    ]);
    expect(usage).toStrictEqual({
      ...head('chat'),
      choices: [],
      usage: {
        prompt_tokens: plan.promptTokens,
        total_tokens: plan.promptTokens + 6,
        completion_tokens: 6,
      },
    });
  });

  it('without return_token_ids still serializes token_ids and prompt_token_ids as null', async () => {
    const { url } = await start();
    const plan = expectedGeneration(chatInput, { maxTokens: 3 });
    const { events } = await sse(`${url}/v1/chat/completions`, { messages: ask, max_tokens: 3 });
    expect(events).toHaveLength(4);
    expect(events[0]).toHaveProperty('prompt_token_ids', null);
    for (const [i, chunk] of events.slice(1).entries()) {
      const choice = (chunk.choices as Json[])[0]!;
      expect(choice).toHaveProperty('token_ids', null);
      expect(choice.delta).toStrictEqual({ content: plan.deltas[i] });
      expect(chunk).not.toHaveProperty('prompt_token_ids');
      expect(chunk).not.toHaveProperty('usage');
    }
  });
});

describe('completions streaming, field by field', () => {
  it('every choice field present; prompt_token_ids in the first chunk only; usage null', async () => {
    const { url } = await start();
    const input: GenerationInput = { kind: 'completion', prompt: 'Once upon a time' };
    const plan = expectedGeneration(input, { maxTokens: 4 });
    const { events } = await sse(`${url}/v1/completions`, {
      prompt: 'Once upon a time',
      max_tokens: 4,
      return_token_ids: true,
    });
    expect(events).toHaveLength(4);
    events.forEach((chunk, i) => {
      expect(chunk).toStrictEqual({
        ...head('completion'),
        id: events[0]!.id,
        created: events[0]!.created,
        choices: [
          {
            index: 0,
            text: plan.deltas[i],
            logprobs: null,
            finish_reason: i === 3 ? 'length' : null,
            stop_reason: null,
            prompt_token_ids: i === 0 ? plan.promptIds : null,
            token_ids: [plan.ids[i]],
          },
        ],
        usage: null,
      });
    });
    const plain = await sse(`${url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 2 });
    for (const chunk of plain.events) {
      expect((chunk.choices as Json[])[0]).toMatchObject({
        prompt_token_ids: null,
        token_ids: null,
      });
    }
  });
});

describe('non-streaming answers, field by field', () => {
  it('chat: top-level prompt_token_ids, choice token_ids (null when not asked)', async () => {
    const { url } = await start();
    const plan = expectedGeneration(chatInput, { maxTokens: 5 });
    const usage = {
      prompt_tokens: plan.promptTokens,
      total_tokens: plan.promptTokens + 5,
      completion_tokens: 5,
      prompt_tokens_details: null,
    };
    for (const returnTokenIds of [true, false]) {
      const { status, body } = await post(`${url}/v1/chat/completions`, {
        messages: ask,
        max_tokens: 5,
        return_token_ids: returnTokenIds,
      });
      expect(status).toBe(200);
      expect(body).toStrictEqual({
        ...head('chat'),
        object: 'chat.completion',
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
            logprobs: null,
            finish_reason: 'length',
            stop_reason: null,
            token_ids: returnTokenIds ? plan.ids : null,
          },
        ],
        service_tier: null,
        system_fingerprint: null,
        usage,
        prompt_logprobs: null,
        prompt_token_ids: returnTokenIds ? plan.promptIds : null,
        kv_transfer_params: null,
      });
    }
  });

  it('completions: prompt_token_ids and token_ids in the choice', async () => {
    const { url } = await start();
    const input: GenerationInput = { kind: 'completion', prompt: [300, 32, 0xc3] };
    const plan = expectedGeneration(input, { maxTokens: 5 });
    const { body } = await post(`${url}/v1/completions`, {
      prompt: [300, 32, 0xc3],
      max_tokens: 5,
      return_token_ids: true,
    });
    expect(body).toStrictEqual({
      ...head('completion'),
      choices: [
        {
          index: 0,
          text: plan.text,
          logprobs: null,
          finish_reason: 'length',
          stop_reason: null,
          token_ids: plan.ids,
          prompt_logprobs: null,
          prompt_token_ids: [300, 32, 0xc3],
        },
      ],
      service_tier: null,
      system_fingerprint: null,
      usage: {
        prompt_tokens: 3,
        total_tokens: 8,
        completion_tokens: 5,
        prompt_tokens_details: null,
      },
      kv_transfer_params: null,
    });
    // The prompt ended inside " ü" (of " über"): the first generated byte completes the
    // character, and the text has all of it.
    expect(plan.ids[0]).toBe(0xbc);
    expect(plan.text.startsWith('über')).toBe(true);
  });

  it("answers a prompt id outside the vocabulary with vLLM's 400", async () => {
    const { url } = await start();
    const { status, body } = await post(`${url}/v1/completions`, { prompt: [5, 1_000_000] });
    expect(status).toBe(400);
    expect(body).toStrictEqual({
      error: {
        message: 'Token id 1000000 is out of vocabulary',
        type: 'BadRequestError',
        param: null,
        code: 400,
      },
    });
    expect((await post(`${url}/v1/completions`, { prompt: [-1] })).status).toBe(400);
  });
});

describe('continuing a cut generation on another engine', () => {
  it('continues by ids after a cut inside a character, and the spliced text is the whole answer', async () => {
    const { input, k } = cutInsideCharacter();
    const n = 32;
    const full = expectedGeneration(input, { maxTokens: n });
    const { url: dying } = await start({ dieMidStream: k });
    const messages = input.kind === 'chat' ? input.messages : [];
    const first = await sse(`${dying}/v1/chat/completions`, {
      messages,
      max_tokens: n,
      return_token_ids: true,
    });
    expect(first.done).toBe(false);
    const promptIds = first.events[0]!.prompt_token_ids as number[];
    const chunks = first.events.slice(1).map((e) => (e.choices as Json[])[0]!);
    expect(chunks).toHaveLength(k);
    const generated = chunks.flatMap((c) => c.token_ids as number[]);
    const seen = chunks.map((c) => (c.delta as Json).content as string).join('');
    // The cut is inside a character: its bytes so far show no text yet.
    expect(decode(generated)).not.toBe(seen);
    expect(decode(generated).endsWith('\uFFFD')).toBe(true);

    const { url: healthy } = await start();
    const rest = await sse(`${healthy}/v1/completions`, {
      prompt: [...promptIds, ...generated],
      max_tokens: n - k,
      return_token_ids: true,
    });
    const restChoices = rest.events.map((e) => (e.choices as Json[])[0]!);
    const restText = restChoices.map((c) => c.text as string).join('');
    expect([...generated, ...restChoices.flatMap((c) => c.token_ids as number[])]).toEqual(
      full.ids,
    );
    expect(seen + restText).toBe(full.text);
    expect(restChoices.at(-1)).toMatchObject({ finish_reason: 'length' });
    // The library says the same.
    expect(expectedGeneration(continuationInput(input, generated), { maxTokens: n - k }).text).toBe(
      restText,
    );
    // /detokenize on the new engine gives the text of the ids (the held-back byte as U+FFFD).
    const detok = await post(`${healthy}/detokenize`, { tokens: generated });
    expect(detok.body).toStrictEqual({ prompt: decode(generated) });
  });
});

describe('stop strings on the wire', () => {
  const input: GenerationInput = { kind: 'completion', prompt: 'stop here' };
  const full = expectedGeneration(input, { maxTokens: 20 });
  const stop = full.text.split(' ')[4]!;

  it("streams exactly expectedGeneration's held-back deltas and cuts before the stop string", async () => {
    const { url } = await start();
    const plan = expectedGeneration(input, { maxTokens: 20, stop: [stop, 'xxxxxxxxxx'] });
    expect(plan.deltas.filter((d) => d === '').length).toBeGreaterThan(1);
    const { events } = await sse(`${url}/v1/completions`, {
      prompt: 'stop here',
      max_tokens: 20,
      stop: [stop, 'xxxxxxxxxx'],
      return_token_ids: true,
      stream_options: { include_usage: true },
    });
    const usage = events.pop();
    const choices = events.map((e) => (e.choices as Json[])[0]!);
    expect(choices.map((c) => c.text)).toEqual(plan.deltas);
    expect(choices.at(-1)).toMatchObject({ finish_reason: 'stop', stop_reason: stop });
    expect(choices.map((c) => c.text).join('')).toBe(full.text.slice(0, full.text.indexOf(stop)));
    expect(usage?.usage).toMatchObject({ completion_tokens: plan.completionTokens });
    const { body } = await post(`${url}/v1/completions`, {
      prompt: 'stop here',
      max_tokens: 20,
      stop: [stop],
      include_stop_str_in_output: true,
    });
    expect((body.choices as Json[])[0]).toMatchObject({
      text: full.text.slice(0, full.text.indexOf(stop) + stop.length),
      finish_reason: 'stop',
      stop_reason: stop,
    });
  });

  it('stops on stop_token_ids with the id as stop_reason, and not before min_tokens', async () => {
    const { url } = await start();
    const id = full.ids[3]!;
    const { body } = await post(`${url}/v1/completions`, {
      prompt: 'stop here',
      max_tokens: 20,
      stop_token_ids: [id],
    });
    const plan = expectedGeneration(input, { maxTokens: 20, stopTokenIds: [id] });
    expect((body.choices as Json[])[0]).toMatchObject({
      text: plan.text,
      finish_reason: 'stop',
      stop_reason: id,
    });
    const late = await post(`${url}/v1/completions`, {
      prompt: 'stop here',
      max_tokens: 20,
      stop_token_ids: [id],
      min_tokens: 15,
    });
    expect((late.body.usage as Json).completion_tokens).toBeGreaterThanOrEqual(15);
  });
});

describe('logprobs on the wire', () => {
  it('chat: one content entry per token (token, logprob, bytes, top_logprobs), streamed per chunk', async () => {
    const { url } = await start();
    const plan = expectedGeneration(chatInput, { maxTokens: 8, topLogprobs: 3 });
    const entry = (i: number) => {
      const [chosen, ...others] = plan.logprobs![i]!;
      const one = (c: { id: number; logprob: number }) => ({
        token: decode([c.id]),
        logprob: c.logprob,
        bytes: [...new TextEncoder().encode(decode([c.id]))],
      });
      return { ...one(chosen!), top_logprobs: [chosen!, ...others].map(one) };
    };
    const { body } = await post(`${url}/v1/chat/completions`, {
      messages: ask,
      max_tokens: 8,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = ((body.choices as Json[])[0]!.logprobs as Json).content as Json[];
    expect(content).toStrictEqual(plan.ids.map((_, i) => entry(i)));
    // A byte inside a character is the token "\uFFFD" (its bytes: U+FFFD's UTF-8, as vLLM).
    const { events } = await sse(`${url}/v1/chat/completions`, {
      messages: ask,
      max_tokens: 8,
      logprobs: true,
      top_logprobs: 3,
    });
    events.slice(1).forEach((chunk, i) => {
      expect((chunk.choices as Json[])[0]!.logprobs).toStrictEqual({ content: [entry(i)] });
    });
    const bad = await post(`${url}/v1/chat/completions`, { messages: ask, top_logprobs: 2 });
    expect(bad.status).toBe(400);
  });

  it('completions: text_offset continues across chunks; tokens, token_logprobs, top_logprobs', async () => {
    const { url } = await start();
    const { input } = cutInsideCharacter();
    const prompt = encodePrompt(input);
    const plan = expectedGeneration(
      { kind: 'completion', prompt },
      { maxTokens: 32, topLogprobs: 2 },
    );
    const { events } = await sse(`${url}/v1/completions`, { prompt, max_tokens: 32, logprobs: 2 });
    let offset = 0;
    events.forEach((chunk, i) => {
      const choice = (chunk.choices as Json[])[0]!;
      const [chosen, other] = plan.logprobs![i]!;
      expect(choice.logprobs).toStrictEqual({
        text_offset: [offset],
        token_logprobs: [chosen!.logprob],
        tokens: [decode([chosen!.id])],
        top_logprobs: [
          { [decode([chosen!.id])]: chosen!.logprob, [decode([other!.id])]: other!.logprob },
        ],
      });
      offset += [...(choice.text as string)].length;
    });
    const { body } = await post(`${url}/v1/completions`, { prompt, max_tokens: 32, logprobs: 2 });
    const logprobs = (body.choices as Json[])[0]!.logprobs as {
      text_offset: number[];
      tokens: string[];
    };
    // Non-streaming, vLLM adds each decoded token's length: a partial byte counts 1 ("\uFFFD").
    expect(logprobs.tokens).toContain('\uFFFD');
    expect(logprobs.text_offset).toEqual(
      logprobs.tokens.map((_, i) => logprobs.tokens.slice(0, i).join('').length),
    );
    expect(logprobs.text_offset.at(-1)).toBeGreaterThan(offset - [...plan.deltas.at(-1)!].length);
  });
});

describe('/tokenize and /detokenize', () => {
  it('tokenize a prompt or chat messages, detokenize ids, without the API key (not under /v1)', async () => {
    const { url } = await start({ apiKey: 'secret', maxModelLen: 2048 });
    const text = await post(`${url}/tokenize`, { model: 'mock-model', prompt: 'the café' });
    expect(text).toStrictEqual({
      status: 200,
      body: { count: 7, max_model_len: 2048, tokens: encode('the café'), token_strs: null },
    });
    const chat = await post(`${url}/tokenize`, {
      messages: ask,
      add_generation_prompt: true,
      add_special_tokens: false,
    });
    expect(chat.body.tokens).toEqual(encodePrompt(chatInput));
    const open = await post(`${url}/tokenize`, {
      messages: [...ask, { role: 'assistant', content: 'the' }],
      add_generation_prompt: false,
      continue_final_message: true,
    });
    expect(decode(open.body.tokens as number[]).endsWith('<|assistant|>\nthe')).toBe(true);
    const strs = await post(`${url}/tokenize`, { prompt: 'é', return_token_strs: true });
    expect(strs.body.token_strs).toEqual(['\uFFFD', '\uFFFD']);
    expect(await post(`${url}/detokenize`, { tokens: encode('naïve 日本 🙂') })).toStrictEqual({
      status: 200,
      body: { prompt: 'naïve 日本 🙂' },
    });
  });

  it('answers bad input with vLLM-shaped 400s and an unknown model with 404', async () => {
    const { url } = await start();
    const noPrompt = await post(`${url}/tokenize`, {});
    expect(noPrompt.status).toBe(400);
    expect(noPrompt.body.error).toMatchObject({ type: 'BadRequestError', code: 400 });
    const outside = await post(`${url}/detokenize`, { tokens: [1, 99_999] });
    expect(outside).toStrictEqual({
      status: 400,
      body: {
        error: {
          message: 'Token id 99999 is out of vocabulary',
          type: 'BadRequestError',
          param: null,
          code: 400,
        },
      },
    });
    expect((await post(`${url}/detokenize`, { tokens: 'abc' })).status).toBe(400);
    expect((await post(`${url}/tokenize`, { model: 'other', prompt: 'x' })).status).toBe(404);
  });
});

describe('request log', () => {
  it('appends one JSON line per inference request, and keeps the same records in memory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mock-log-'));
    const { engine, url } = await start({ requestLogDir: dir });
    const before = Date.now();
    await post(
      `${url}/v1/chat/completions`,
      { messages: ask, max_tokens: 3 },
      { 'x-request-id': 'r-1' },
    );
    const ids = [...encodePrompt(chatInput), 300];
    await sse(
      `${url}/v1/completions`,
      { prompt: ids, return_token_ids: true },
      { 'x-request-id': 'r-1' },
    );
    await post(`${url}/tokenize`, { prompt: 'not inference' });
    const file = join(dir, `requests-${process.pid}.jsonl`);
    expect(readdirSync(dir).sort()).toEqual([
      `first-tokens-${process.pid}.jsonl`,
      `requests-${process.pid}.jsonl`,
    ]);
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Json);
    expect(lines).toStrictEqual([
      {
        at: expect.any(Number),
        path: '/v1/chat/completions',
        requestId: 'r-1',
        promptTokens: ids.length - 1,
        maxTokens: 3,
        stream: false,
        returnTokenIds: false,
      },
      {
        at: expect.any(Number),
        path: '/v1/completions',
        requestId: 'r-1',
        promptTokens: ids.length,
        maxTokens: null,
        stream: true,
        returnTokenIds: true,
      },
    ]);
    expect(lines[0]!.at).toBeGreaterThanOrEqual(before);
    expect(engine.requestLog()).toStrictEqual(lines);
    // Without x-request-id, requestId is null; a request refused as invalid is not logged.
    await post(`${url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
    await post(`${url}/v1/completions`, { prompt: [99_999] });
    expect(engine.requestLog().map((r) => r.requestId)).toEqual(['r-1', 'r-1', null]);
  });

  it("appends a first-token line when a request's first token is sent, and none for a request cut before it", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mock-log-'));
    const { url } = await start({ requestLogDir: dir, ttft: 300 });
    const firstTokens = () => {
      const file = join(dir, `first-tokens-${process.pid}.jsonl`);
      if (!readdirSync(dir).includes(`first-tokens-${process.pid}.jsonl`)) return [];
      return readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Json);
    };
    // Cut before its first token (the client leaves during the TTFT): no line.
    const abort = new AbortController();
    const cut = fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'cut-early' },
      body: JSON.stringify({ messages: ask, max_tokens: 3, stream: true }),
      signal: abort.signal,
    });
    const response = await cut;
    abort.abort();
    await response.body?.cancel().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 400));
    expect(firstTokens()).toEqual([]);
    const before = Date.now();
    await sse(
      `${url}/v1/chat/completions`,
      { messages: ask, max_tokens: 3, stream: true },
      { 'x-request-id': 'r-2' },
    );
    await post(`${url}/v1/completions`, { prompt: 'hi', max_tokens: 2 }, { 'x-request-id': 'r-3' });
    const lines = firstTokens();
    expect(lines).toStrictEqual([
      {
        at: expect.any(Number),
        event: 'first-token',
        requestId: 'r-2',
        path: '/v1/chat/completions',
        promptTokens: encodePrompt(chatInput).length,
        pid: process.pid,
      },
      {
        at: expect.any(Number),
        event: 'first-token',
        requestId: 'r-3',
        path: '/v1/completions',
        promptTokens: 2,
        pid: process.pid,
      },
    ]);
    // Sent after the TTFT, not when the request arrived.
    expect(lines[0]!.at as number).toBeGreaterThanOrEqual(before + 290);
  });
});
