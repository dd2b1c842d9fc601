/**
 * A scripted OpenAI-compatible engine on 127.0.0.1 (port 0) for this package's tests, with
 * the mock engine's script semantics: the first rule whose `match` regex finds the prompt
 * answers, and the text is cut before the first `stop` string, as vLLM does. Serves
 * `/v1/models`, `/v1/completions` and `/v1/chat/completions`, streamed or not, with usage.
 */
import { createServer } from 'node:http';
import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Rule {
  match?: string;
  response: string;
  finishReason?: 'stop' | 'length';
}

export interface EngineOptions {
  rules: Rule[];
  /** Answer this status (with an OpenAI error body) to every n-th generation request. */
  failEvery?: { n: number; status: number };
  /** Pause between streamed chunks. */
  chunkDelayMs?: number;
  /** Pause before a non-streamed answer. */
  delayMs?: number;
}

export interface Engine {
  url: string;
  /** Every completions prompt (chat: the last user message), in arrival order. */
  prompts: string[];
  close(): Promise<void>;
}

interface Body {
  prompt?: string;
  messages?: { content: string }[];
  stop?: string | string[];
  stream?: boolean;
  max_tokens?: number;
}

export async function startEngine(options: EngineOptions): Promise<Engine> {
  const prompts: string[] = [];
  let generations = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.url === '/v1/models') {
        json(res, 200, { object: 'list', data: [{ id: 'mock-model', object: 'model' }] });
        return;
      }
      const chat = req.url === '/v1/chat/completions';
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body;
      const prompt = chat ? (body.messages?.at(-1)?.content ?? '') : (body.prompt ?? '');
      prompts.push(prompt);
      generations += 1;
      if (options.failEvery && generations % options.failEvery.n === 0) {
        json(res, options.failEvery.status, {
          error: { message: 'scripted failure', type: 'server_error' },
        });
        return;
      }
      const rule = options.rules.find(
        (r) => r.match === undefined || new RegExp(r.match).test(prompt),
      );
      let text = rule?.response ?? '';
      const stops = typeof body.stop === 'string' ? [body.stop] : (body.stop ?? []);
      for (const stop of stops) {
        const at = text.indexOf(stop);
        if (at >= 0) text = text.slice(0, at);
      }
      const usage = {
        prompt_tokens: prompt.split(/\s+/).length,
        completion_tokens: text.split(/\s+/).length,
        total_tokens: 0,
      };
      usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
      const finish = rule?.finishReason ?? 'stop';
      const base = { id: `cmpl-${generations}`, created: 0, model: 'mock-model' };
      const choice = (content: string, finishReason: string | null) =>
        chat
          ? {
              index: 0,
              delta: { content },
              message: { role: 'assistant', content },
              finish_reason: finishReason,
            }
          : { index: 0, text: content, finish_reason: finishReason, logprobs: null };
      if (!body.stream) {
        setTimeout(
          () =>
            json(res, 200, {
              ...base,
              object: chat ? 'chat.completion' : 'text_completion',
              choices: [choice(text, finish)],
              usage,
            }),
          options.delayMs ?? 0,
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const object = chat ? 'chat.completion.chunk' : 'text_completion';
      const pieces = text.match(/\S+\s*/g) ?? [];
      const events = [
        ...pieces.map((piece) => ({ ...base, object, choices: [choice(piece, null)] })),
        { ...base, object, choices: [choice('', finish)] },
        { ...base, object, choices: [], usage },
      ];
      const send = (index: number) => {
        if (index === events.length) {
          res.end('data: [DONE]\n\n');
          return;
        }
        res.write(`data: ${JSON.stringify(events[index])}\n\n`);
        setTimeout(() => send(index + 1), options.chunkDelayMs ?? 0);
      };
      send(0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    prompts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}
