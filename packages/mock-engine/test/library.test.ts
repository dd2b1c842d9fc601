import { connect } from 'node:net';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import {
  continuationInput,
  createMockEngine,
  encodePrompt,
  expectedGeneration,
} from '../src/index.js';
import type { GenerationInput } from '../src/index.js';
import { engines, start } from './start.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];

type Client = Awaited<ReturnType<typeof start>>['client'];

/** Send a request the way `expectedGeneration` describes it; the text, streamed or not. */
async function answer(
  client: Client,
  input: GenerationInput,
  maxTokens: number,
  stream: boolean,
): Promise<{ text: string; finish: string | null | undefined }> {
  if (input.kind === 'chat') {
    const body = {
      model: 'mock-model',
      messages: input.messages.map((m) => ({ role: m.role, content: m.content })),
      max_tokens: maxTokens,
      // vLLM's chat-template parameters, which the openai client passes through.
      ...(input.continueFinalMessage === undefined
        ? {}
        : { continue_final_message: input.continueFinalMessage }),
      ...(input.addGenerationPrompt === undefined
        ? {}
        : { add_generation_prompt: input.addGenerationPrompt }),
    } as OpenAI.ChatCompletionCreateParamsNonStreaming;
    if (!stream) {
      const res = await client.chat.completions.create(body);
      return { text: res.choices[0]?.message.content ?? '', finish: res.choices[0]?.finish_reason };
    }
    let text = '';
    let finish: string | null | undefined;
    for await (const chunk of await client.chat.completions.create({ ...body, stream: true })) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish };
  }
  const body = { model: 'mock-model', prompt: input.prompt as string, max_tokens: maxTokens };
  if (!stream) {
    const res = await client.completions.create(body);
    return { text: res.choices[0]?.text ?? '', finish: res.choices[0]?.finish_reason };
  }
  let text = '';
  let finish: string | null | undefined;
  for await (const chunk of await client.completions.create({ ...body, stream: true })) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { text, finish };
}

const inputs: [string, GenerationInput][] = [
  [
    'chat',
    {
      kind: 'chat',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello there' },
      ],
    },
  ],
  ['completions', { kind: 'completion', prompt: 'Once upon a time' }],
];

describe('chat and completions', () => {
  it('answers a chat completion with max_tokens filler tokens and usage', async () => {
    const { client } = await start({ model: 'org/model' });
    const res = await client.chat.completions.create({
      model: 'org/model',
      messages: ask,
      max_tokens: 7,
    });
    expect(res.object).toBe('chat.completion');
    expect(res.choices[0]?.finish_reason).toBe('length');
    expect(res.choices[0]?.message.role).toBe('assistant');
    const input = { kind: 'chat', messages: ask } as const;
    expect(res.choices[0]?.message.content).toBe(expectedGeneration(input, { maxTokens: 7 }).text);
    // `<|user|>`, `\n`, `Hello` (5 bytes), ` there` (6 bytes), `\n`, `<|assistant|>`, `\n`.
    expect(encodePrompt(input)).toHaveLength(16);
    expect(res.usage).toMatchObject({ completion_tokens: 7, prompt_tokens: 16, total_tokens: 23 });
  });

  it.each(inputs)(
    'answers %s with exactly expectedGeneration, streamed and not (temperature does not matter)',
    async (_, input) => {
      const { client } = await start();
      const expected = expectedGeneration(input, { maxTokens: 15 });
      expect(await answer(client, input, 15, false)).toEqual({
        text: expected.text,
        finish: 'length',
      });
      expect(await answer(client, input, 15, true)).toEqual({
        text: expected.text,
        finish: 'length',
      });
      const hot =
        input.kind === 'chat'
          ? (
              await client.chat.completions.create({
                model: 'mock-model',
                messages: [...input.messages] as OpenAI.ChatCompletionMessageParam[],
                max_tokens: 15,
                temperature: 1.5,
              })
            ).choices[0]?.message.content
          : (
              await client.completions.create({
                model: 'mock-model',
                prompt: input.prompt as string,
                max_tokens: 15,
                temperature: 1.5,
              })
            ).choices[0]?.text;
      expect(hot).toBe(expected.text);
    },
  );

  it.each(inputs)(
    'continues %s from the prompt plus the first k generated tokens with the remaining tokens',
    async (_, input) => {
      const { client } = await start();
      const full = expectedGeneration(input, { maxTokens: 12 });
      for (const k of [1, 5, 11]) {
        const continued = continuationInput(input, full.ids.slice(0, k));
        const rest = await answer(client, continued, 12 - k, k % 2 === 1);
        expect(rest.text, `k = ${k}`).toBe(
          expectedGeneration(continued, { maxTokens: 12 - k }).text,
        );
        expect(expectedGeneration(continued, { maxTokens: 12 - k }).ids).toEqual(full.ids.slice(k));
      }
    },
  );

  it('refuses continue_final_message unless add_generation_prompt is false, as vLLM does', async () => {
    const { client } = await start();
    const messages = [...ask, { role: 'assistant' as const, content: 'the' }];
    const send = (extra: object) =>
      client.chat.completions.create({
        model: 'mock-model',
        messages,
        continue_final_message: true,
        ...extra,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    await expect(send({ add_generation_prompt: true })).rejects.toMatchObject({
      status: 400,
      error: { message: expect.stringMatching(/^Cannot set both/) },
    });
    await expect(send({})).rejects.toMatchObject({
      status: 400,
      error: { message: expect.stringMatching(/are not compatible/) },
    });
    const ok = await send({ add_generation_prompt: false });
    expect(ok.choices[0]?.message.content?.startsWith(' ')).toBe(true);
  });

  it('streams the same text as the non-streaming answer, then a usage chunk and [DONE]', async () => {
    const { client } = await start();
    const full = await client.chat.completions.create({
      model: 'mock-model',
      messages: ask,
      max_tokens: 12,
    });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: ask,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let first = true;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (first) expect(chunk.choices[0]?.delta.role).toBe('assistant');
      first = false;
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(full.choices[0]?.message.content);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: 12 });
  });

  it('cuts the output before the first stop string and reports finish_reason stop', async () => {
    const { client } = await start({
      script: [{ response: 'alpha beta <|call|> gamma delta' }],
    });
    const res = await client.completions.create({
      model: 'mock-model',
      prompt: 'go',
      max_tokens: 50,
      stop: ['delta', '<|call|>'],
    });
    expect(res.choices[0]?.text).toBe('alpha beta ');
    expect(res.choices[0]?.finish_reason).toBe('stop');
    expect((res.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe('<|call|>');

    const stream = await client.completions.create({
      model: 'mock-model',
      prompt: 'go',
      stop: '<|call|>',
      stream: true,
    });
    let text = '';
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe('alpha beta ');
    expect(finish).toBe('stop');
  });

  it('answers with the first script rule whose regex matches the prompt or messages', async () => {
    const { client } = await start({
      script: [
        { match: 'weather', response: 'It is sunny.' },
        { match: 'system rules[\\s\\S]*capital', response: 'Paris', finishReason: 'length' },
        { response: 'fallback answer' },
      ],
    });
    const chat = (content: string) =>
      client.chat.completions.create({
        model: 'mock-model',
        messages: [
          { role: 'system', content: 'system rules' },
          { role: 'user', content },
        ],
      });
    expect((await chat('how is the weather?')).choices[0]?.message.content).toBe('It is sunny.');
    const capital = await chat('the capital of France?');
    expect(capital.choices[0]?.message.content).toBe('Paris');
    expect(capital.choices[0]?.finish_reason).toBe('length');
    const other = await chat('anything');
    expect(other.choices[0]?.message.content).toBe('fallback answer');
    expect(other.choices[0]?.finish_reason).toBe('stop');
    // max_tokens still truncates a scripted answer.
    const short = await client.completions.create({
      model: 'mock-model',
      prompt: 'x',
      max_tokens: 1,
    });
    expect(short.choices[0]).toMatchObject({ text: 'fallback', finish_reason: 'length' });
  });

  it('paces tokens at tokens-per-second after the time to first token', async () => {
    const { client } = await start({ tokensPerSecond: 100, ttft: 100 });
    const started = Date.now();
    const stream = await client.completions.create({
      model: 'mock-model',
      prompt: 'p',
      max_tokens: 11,
      stream: true,
    });
    let firstAt = 0;
    for await (const chunk of stream) {
      if (!firstAt && chunk.choices[0]?.text) firstAt = Date.now();
    }
    const elapsed = Date.now() - started;
    expect(firstAt - started).toBeGreaterThanOrEqual(90);
    // 10 intervals of 10 ms after the first token
    expect(elapsed).toBeGreaterThanOrEqual(190);
  });
});

describe('errors', () => {
  it('enforces the API key on /v1 with a 401 and leaves /health open', async () => {
    const { url } = await start({ apiKey: 'sekret' });
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401 });
    const right = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sekret', maxRetries: 0 });
    const models = await right.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['mock-model']);
    expect((await fetch(`${url}/health`)).status).toBe(200);
  });

  it('answers malformed requests with an OpenAI-shaped 400', async () => {
    const { url, client } = await start();
    await expect(
      client.chat.completions.create({ model: 'mock-model', messages: [] }),
    ).rejects.toMatchObject({ status: 400, error: { type: 'BadRequestError', param: 'messages' } });
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: '{oops' });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: {
        message: 'request body is not valid JSON',
        type: 'BadRequestError',
        param: null,
        code: 400,
      },
    });
    await expect(
      client.completions.create({ model: 'mock-model', prompt: 'x', max_tokens: 100_000 }),
    ).rejects.toMatchObject({ status: 400 });
  });

  it('answers an unknown model with a 404', async () => {
    const { client } = await start({ servedModelName: ['a', 'b'] });
    await expect(
      client.chat.completions.create({ model: 'c', messages: ask }),
    ).rejects.toMatchObject({ status: 404 });
    const ok = await client.chat.completions.create({ model: 'b', messages: ask });
    expect(ok.model).toBe('b');
  });

  it('injects 500s at fail-rate 1', async () => {
    const { engine, client } = await start({ failRate: 1 });
    await expect(
      client.chat.completions.create({ model: 'mock-model', messages: ask }),
    ).rejects.toMatchObject({ status: 500 });
    expect(engine.stats().failed).toBe(1);
  });
});

describe('embeddings', () => {
  it('returns deterministic unit vectors of the configured size, float or base64', async () => {
    const { client, url } = await start({ embeddingDims: 8 });
    // The openai client asks for base64 and decodes it.
    const a = await client.embeddings.create({ model: 'mock-model', input: ['one', 'two'] });
    const b = await client.embeddings.create({ model: 'mock-model', input: 'one' });
    expect(a.data).toHaveLength(2);
    const first = a.data[0]?.embedding ?? [];
    expect(first).toHaveLength(8);
    expect(b.data[0]?.embedding).toEqual(first);
    expect(a.data[1]?.embedding).not.toEqual(first);
    const norm = Math.sqrt(first.reduce((s, x) => s + x * x, 0));
    expect(norm).toBeCloseTo(1, 5);
    const raw = await fetch(`${url}/v1/embeddings`, {
      method: 'POST',
      body: JSON.stringify({ input: 'one', encoding_format: 'float' }),
    });
    const json = (await raw.json()) as { data: { embedding: number[] }[] };
    json.data[0]?.embedding.forEach((x, i) => expect(x).toBeCloseTo(first[i] ?? NaN, 6));
  });
});

describe('load, disconnects and failure injection', () => {
  it('reports running and waiting requests and KV usage in /metrics', async () => {
    const { url, client } = await start({ tokensPerSecond: 20, maxNumSeqs: 1 });
    const controller = new AbortController();
    const streams = [0, 1].map(() =>
      client.completions
        .create(
          { model: 'mock-model', prompt: 'p', max_tokens: 100, stream: true },
          { signal: controller.signal },
        )
        .catch(() => undefined),
    );
    await new Promise((r) => setTimeout(r, 200));
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).toContain('vllm:num_requests_running{model_name="mock-model"} 1');
    expect(text).toContain('vllm:num_requests_waiting{model_name="mock-model"} 1');
    const kv = /vllm:kv_cache_usage_perc\{[^}]*\} (\S+)/.exec(text)?.[1];
    expect(Number(kv)).toBeGreaterThan(0);
    expect(text).toMatch(/vllm:gpu_cache_usage_perc\{[^}]*\} \S+/);
    controller.abort();
    await Promise.all(streams);
  });

  it('stops generating when the client disconnects and counts the abort', async () => {
    const { engine, url, client } = await start({ tokensPerSecond: 50 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: ask,
      max_tokens: 1000,
      stream: true,
    });
    let chunks = 0;
    // Leaving the loop early is how users stop a stream: the client aborts the request.
    for await (const _ of stream) if (++chunks === 3) break;
    await expect.poll(() => engine.stats().aborted).toBe(1);
    expect(engine.stats().running).toBe(0);
    const generated = engine.stats().generationTokens;
    await new Promise((r) => setTimeout(r, 150));
    expect(engine.stats().generationTokens).toBe(generated);
    expect(await (await fetch(`${url}/metrics`)).text()).toContain('mock:requests_aborted_total 1');
  });

  it('cuts streams after die-mid-stream chunks', async () => {
    const { engine, client } = await start({ dieMidStream: 3 });
    const stream = await client.completions.create({
      model: 'mock-model',
      prompt: 'p',
      max_tokens: 20,
      stream: true,
    });
    const texts: string[] = [];
    await expect(
      (async () => {
        for await (const chunk of stream) texts.push(chunk.choices[0]?.text ?? '');
      })(),
    ).rejects.toThrow();
    expect(texts).toHaveLength(3);
    expect(engine.stats().killed).toBe(1);
  });

  it('silently leaves out the Nth content chunk of every stream with drop-chunk', async () => {
    const { client } = await start({ dropChunk: 3 });
    for (const [, input] of inputs) {
      const expected = expectedGeneration(input, { maxTokens: 8 });
      const streamed = await answer(client, input, 8, true);
      expect(streamed.finish).toBe('length');
      expect(streamed.text).not.toBe(expected.text);
      // The 3rd chunk, or the first one after it with text (a chunk inside a character is "").
      let drop = 2;
      while (expected.deltas[drop] === '') drop++;
      expect(streamed.text).toBe(expected.deltas.toSpliced(drop, 1).join(''));
      // Non-streaming answers are untouched.
      expect((await answer(client, input, 8, false)).text).toBe(expected.text);
    }
    // Dropping the last chunk keeps its finish_reason.
    const { client: last } = await start({ dropChunk: 4 });
    const input = inputs[1]![1];
    const streamed = await answer(last, input, 4, true);
    const expected = expectedGeneration(input, { maxTokens: 4 });
    expect(streamed).toEqual({ text: expected.deltas.slice(0, 3).join(''), finish: 'length' });
  });

  it('crashes after crash-after inference requests, not counting health probes', async () => {
    let crashed = 0;
    const { url, client } = await start({ crashAfter: 2, onCrash: () => crashed++ });
    await fetch(`${url}/health`);
    await client.completions.create({ model: 'mock-model', prompt: 'a' });
    expect(crashed).toBe(0);
    await client.completions.create({ model: 'mock-model', prompt: 'b' });
    await expect.poll(() => crashed).toBe(1);
  });

  it('accepts connections but never answers when hanging', async () => {
    const { url } = await start({ hang: true });
    await expect(fetch(`${url}/health`, { signal: AbortSignal.timeout(300) })).rejects.toThrow(
      /abort|timeout/i,
    );
  });

  it('waits load-delay before listening', async () => {
    const engine = createMockEngine({ loadDelay: 200 });
    engines.push(engine);
    const started = Date.now();
    expect(() => engine.url).toThrow(/not listening/);
    await engine.listen(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect((await fetch(`${engine.url}/health`)).status).toBe(200);
  });

  it('rejects invalid options naming the option', () => {
    expect(() => createMockEngine({ failRate: 2 })).toThrow(
      /failRate must be a number between 0 and 1/,
    );
    expect(() => createMockEngine({ script: [{ match: '(', response: 'x' }] })).toThrow(
      /rule 0: "match" is not a valid regex/,
    );
  });
});

describe('graceful shutdown', () => {
  it('finishes the stream in flight, refuses new connections and answers 503 on kept-alive ones', async () => {
    const { engine, url, client } = await start({ tokensPerSecond: 40 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: ask,
      max_tokens: 20,
      stream: true,
    });
    // A raw connection with a slow request in flight; a second one follows after the signal.
    const { port } = new URL(url);
    const socket = connect(Number(port), '127.0.0.1');
    let raw = '';
    socket.on('data', (d: Buffer) => (raw += d.toString()));
    const socketClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const body = JSON.stringify({ model: 'mock-model', prompt: 'hi', max_tokens: 10 });
    socket.write(
      `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    await expect.poll(() => engine.stats().running).toBe(2);

    const shutdownAt = Date.now();
    const shut = engine.shutdown(10_000);
    socket.write('GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n');
    await expect(fetch(`${url}/health`)).rejects.toThrow();
    let text = '';
    let done = false;
    for await (const part of stream) {
      text += part.choices[0]?.delta.content ?? '';
      if (part.choices[0]?.finish_reason) done = true;
    }
    expect(done).toBe(true);
    expect(text).toBe(expectedGeneration({ kind: 'chat', messages: ask }, { maxTokens: 20 }).text);
    await shut;
    expect(Date.now() - shutdownAt).toBeLessThan(5000);
    await socketClosed;
    const [first, second] = raw.split(/(?=HTTP\/1\.1 )/);
    expect(first).toMatch(/^HTTP\/1\.1 200/);
    expect(first).toContain('"text_completion"');
    expect(second).toMatch(/^HTTP\/1\.1 503/);
    expect(second?.toLowerCase()).toContain('connection: close');
    expect(second).toContain('"type":"ServiceUnavailableError"');
    expect(engine.stats().completed).toBe(2);
  });

  it('gives up on requests still running after the shutdown timeout', async () => {
    const { engine, client } = await start({ tokensPerSecond: 10 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: ask,
      max_tokens: 100,
      stream: true,
    });
    const started = Date.now();
    await engine.shutdown(300);
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(
      (async () => {
        for await (const part of stream) void part;
      })(),
    ).rejects.toThrow();
  });
});
