import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encode, expectedChatOutput, expectedGeneration } from '../src/index.js';

const CLI = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));
const merges = { merges: true } as const;
const children: ChildProcess[] = [];

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run pnpm --filter @es/mock-engine build`);
});

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

interface Spawned {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Spawned {
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  children.push(child);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

async function listening(spawned: Spawned): Promise<string> {
  await expect.poll(spawned.output, { timeout: 10_000 }).toMatch(/listening on http/);
  return /listening on (http:\S+)/.exec(spawned.output())?.[1] ?? '';
}

/** GET `path` over the Unix socket `socketPath`: status and body. */
function getOverSocket(
  socketPath: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('es-mock-engine (real process)', () => {
  it('as vLLM: --uds listens on a Unix socket only, the key from VLLM_API_KEY guards /v1/* (it is in no argv)', async () => {
    const socketPath = join(mkdtempSync(join(tmpdir(), 'es-')), 'engine-0.sock');
    const engine = run(['--model=m', `--uds=${socketPath}`], { VLLM_API_KEY: 'es-engine-k-0123' });
    await expect
      .poll(engine.output, { timeout: 10_000 })
      .toContain(`listening on unix:${socketPath}`);
    expect((await getOverSocket(socketPath, '/v1/models')).status).toBe(401);
    const models = await getOverSocket(socketPath, '/v1/models', {
      authorization: 'Bearer es-engine-k-0123',
    });
    expect(models.status).toBe(200);
    expect(JSON.parse(models.body)).toMatchObject({ data: [{ id: 'm' }] });
    // vLLM leaves /health open: so does the mock (the worker's front guards it).
    expect((await getOverSocket(socketPath, '/health')).status).toBe(200);
    expect(engine.output()).not.toContain('es-engine-k-0123');
  });

  it('opens its port only after --load-delay, then serves the OpenAI API with --api-key', async () => {
    const port = await freePort();
    const engine = run([
      '--model',
      '/models/llama',
      '--served-model-name',
      'llama',
      '--port',
      String(port),
      '--api-key',
      'k1',
      '--load-delay',
      '600',
      '--ttft',
      '0',
      '--tokens-per-second',
      '0',
    ]);
    await new Promise((r) => setTimeout(r, 200));
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
    const url = await listening(engine);
    expect(url).toBe(`http://127.0.0.1:${port}`);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k1', maxRetries: 0 });
    const models = await client.models.list();
    expect(models.data[0]).toMatchObject({ id: 'llama', root: '/models/llama' });
    const stream = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
        { maxTokens: 4 },
      ).text,
    );
    const anonymous = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expect(anonymous.models.list()).rejects.toMatchObject({ status: 401 });
    engine.child.kill('SIGTERM');
    expect(await engine.exited).toBe(0);
  });

  it('answers from a --script file and exits with code 3 after --crash-after requests', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mock-engine-'));
    const script = join(dir, 'script.json');
    writeFileSync(script, JSON.stringify([{ match: 'ping', response: 'pong' }]));
    const engine = run(['--port', '0', '--script', script, '--crash-after', '2', '--ttft', '0']);
    const url = await listening(engine);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const first = await client.completions.create({ model: 'mock-model', prompt: 'ping?' });
    expect(first.choices[0]?.text).toBe('pong');
    await client.completions.create({ model: 'mock-model', prompt: 'ping!' });
    expect(await engine.exited).toBe(3);
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });

  it('answers exactly expectedGeneration, but for the chunk --drop-chunk leaves out of streams', async () => {
    const engine = run(['--port', '0', '--drop-chunk', '2', '--ttft', '0']);
    const url = await listening(engine);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: 'hi' }];
    const expected = expectedGeneration({ kind: 'chat', messages }, { maxTokens: 6 });
    const full = await client.chat.completions.create({
      model: 'mock-model',
      messages,
      max_tokens: 6,
    });
    expect(full.choices[0]?.message.content).toBe(expected.text);
    let text = '';
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages,
      max_tokens: 6,
      stream: true,
    });
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(expected.deltas.toSpliced(1, 1).join(''));
  });

  it('--merges: prompts and /tokenize merge, generation does not', async () => {
    const engine = run(['--port', '0', '--merges', '--ttft', '0', '--tokens-per-second', '0']);
    const url = await listening(engine);
    const tokenize = await fetch(`${url}/tokenize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'the café' }),
    });
    expect(await tokenize.json()).toMatchObject({ count: 2, tokens: encode('the café', merges) });
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const prompt = 'the quick café';
    const answer = await client.completions.create({ model: 'mock-model', prompt, max_tokens: 8 });
    const expected = expectedGeneration(
      { kind: 'completion', prompt },
      { maxTokens: 8, ...merges },
    );
    expect(answer.choices[0]?.text).toBe(expected.text);
    expect(answer.usage?.prompt_tokens).toBe(2);
  });

  it('--request-log-dir: the process appends a line per inference request to requests-<pid>.jsonl, kept after SIGKILL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mock-cli-log-'));
    const engine = run(['--port', '0', '--request-log-dir', dir]);
    const url = await listening(engine);
    const body = JSON.stringify({ prompt: 'hi', max_tokens: 2 });
    const headers = { 'content-type': 'application/json', 'x-request-id': 'cli-1' };
    expect((await fetch(`${url}/v1/completions`, { method: 'POST', headers, body })).status).toBe(
      200,
    );
    engine.child.kill('SIGKILL');
    await engine.exited;
    const file = join(dir, `requests-${engine.child.pid}.jsonl`);
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown);
    expect(lines).toEqual([
      {
        at: expect.any(Number),
        path: '/v1/completions',
        requestId: 'cli-1',
        promptTokens: 2,
        maxTokens: 2,
        stream: false,
        returnTokenIds: false,
      },
    ]);
  });

  it('--kill-mid-stream: the process SIGKILLs itself once a stream has sent N content chunks', async () => {
    const engine = run(['--port', '0', '--kill-mid-stream', '3', '--ttft', '0']);
    const url = await listening(engine);
    const signal = new Promise((resolve) => engine.child.on('exit', (_code, sig) => resolve(sig)));
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const prompt = 'Once upon a time';
    const stream = await client.completions.create({
      model: 'mock-model',
      prompt,
      max_tokens: 10,
      stream: true,
    });
    const texts: string[] = [];
    await expect(
      (async () => {
        for await (const chunk of stream) texts.push(chunk.choices[0]?.text ?? '');
      })(),
    ).rejects.toThrow();
    expect(await signal).toBe('SIGKILL');
    // Exactly the first 3 chunks arrived before the process died.
    const expected = expectedGeneration({ kind: 'completion', prompt }, { maxTokens: 10 });
    expect(texts).toEqual(expected.deltas.slice(0, 3));
  });

  it('rejects an invalid flag value with a message naming it', async () => {
    const engine = run(['--fail-rate', '3']);
    expect(await engine.exited).toBe(2);
    expect(engine.output()).toMatch(/--fail-rate must be a number between 0 and 1/);
    const drop = run(['--drop-chunk', '0']);
    expect(await drop.exited).toBe(2);
    expect(drop.output()).toMatch(/--drop-chunk must be an integer >= 1/);
    const unknown = run(['--bogus-flag']);
    expect(await unknown.exited).not.toBe(0);
    expect(unknown.output()).toMatch(/bogus-flag/);
  });

  it('on SIGTERM finishes the stream in flight and exits 0; a second SIGTERM exits at once', async () => {
    const engine = run(['--port', '0', '--tokens-per-second', '20', '--ttft', '0']);
    const url = await listening(engine);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 20,
      stream: true,
    });
    let text = '';
    let finish: string | null | undefined;
    for await (const part of stream) {
      if (text === '' && part.choices[0]?.delta.content) engine.child.kill('SIGTERM');
      text += part.choices[0]?.delta.content ?? '';
      finish ??= part.choices[0]?.finish_reason;
    }
    expect(finish).toBe('length');
    expect(text).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
        { maxTokens: 20 },
      ).text,
    );
    expect(await engine.exited).toBe(0);

    const second = run(['--port', '0', '--tokens-per-second', '1', '--ttft', '0']);
    const url2 = await listening(second);
    const client2 = new OpenAI({ baseURL: `${url2}/v1`, apiKey: 'x', maxRetries: 0 });
    const long = await client2.completions.create({
      model: 'mock-model',
      prompt: 'hi',
      max_tokens: 100,
      stream: true,
    });
    const signalled = Date.now();
    second.child.kill('SIGTERM');
    await expect.poll(second.output).toMatch(/shutting down/);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(3000);
    await expect(
      (async () => {
        for await (const part of long) void part;
      })(),
    ).rejects.toThrow();
  });
});

describe('the parser flags (reasoning and tool calls)', () => {
  it('refuses a parser it does not write for, naming the ones it does', async () => {
    const reasoning = run(['--reasoning-parser', 'granite']);
    expect(await reasoning.exited).toBe(2);
    expect(reasoning.output()).toMatch(
      /--reasoning-parser "granite" is not supported .*: use deepseek_r1 or qwen3/,
    );
    const tools = run(['--tool-call-parser=mistral', '--enable-auto-tool-choice']);
    expect(await tools.exited).toBe(2);
    expect(tools.output()).toMatch(/--tool-call-parser "mistral" is not supported .*: use hermes/);
    const auto = run(['--enable-auto-tool-choice']);
    expect(await auto.exited).toBe(2);
    expect(auto.output()).toMatch(/--enable-auto-tool-choice requires --tool-call-parser/);
    const gptOss = run(['--model', 'openai/gpt-oss-20b', '--reasoning-parser', 'qwen3']);
    expect(await gptOss.exited).toBe(2);
    expect(gptOss.output()).toMatch(/gpt-oss model \(Harmony\): use openai_gptoss/);
  });

  it.each([
    // As the worker starts the mock: --model=, the listen flags, then the engine arguments.
    [
      [
        '--model=Qwen/Qwen3-8B',
        '--reasoning-parser',
        'qwen3',
        '--tool-call-parser=hermes',
        '--enable-auto-tool-choice',
      ],
      { reasoning: 'think', tools: 'hermes' },
    ],
    [['--model=openai/gpt-oss-20b'], 'harmony'],
  ] as const)('%j answers chat with reasoning and a tool call', async (args, format) => {
    const engine = run([...args, '--host=127.0.0.1', '--port=0', '--ttft=0']);
    const url = await listening(engine);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: 'find it' }];
    const tools = [{ type: 'function' as const, function: { name: 'search' } }];
    const model = args[0].slice('--model='.length);
    const answer = await client.chat.completions.create({
      model,
      messages,
      tools,
      max_tokens: 200,
    });
    const expected = expectedChatOutput(
      { kind: 'chat', messages, tools: [{ name: 'search' }] },
      { maxTokens: 200, outputFormat: format },
    );
    expect(expected.toolCalls).toHaveLength(1);
    const message = answer.choices[0]!.message;
    expect((message as unknown as { reasoning: string }).reasoning).toBe(expected.reasoning);
    expect(message.tool_calls?.map((c) => c.type === 'function' && c.function)).toEqual(
      expected.toolCalls,
    );
    expect(answer.choices[0]!.finish_reason).toBe('tool_calls');
  });
});
