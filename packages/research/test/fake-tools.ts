/**
 * Local stand-ins for the Serper and Jina APIs on 127.0.0.1 (port 0), recording every
 * request. `respond` decides each answer; the default answers like the real services.
 */
import { createServer } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface FakeAnswer {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  /** Wait this long before answering (timeouts). */
  delayMs?: number;
}

export interface FakeTools {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export function searchResponse(query: string): string {
  return JSON.stringify({
    searchParameters: { q: query },
    organic: [
      { title: `About ${query}`, link: 'https://example.org/a', snippet: `All about ${query}.` },
      { title: 'Second', link: 'https://example.org/b', snippet: 'More.', date: '2024-05-01' },
    ],
  });
}

export function defaultAnswer(request: RecordedRequest): FakeAnswer {
  if (request.method === 'POST' && request.path === '/search') {
    const { q } = JSON.parse(request.body) as { q: string };
    return { body: searchResponse(q), headers: { 'content-type': 'application/json' } };
  }
  return { body: `# Page ${request.path.slice(1)}\n\nThe page text.` };
}

export async function startFakeTools(
  respond: (request: RecordedRequest, index: number) => FakeAnswer = defaultAnswer,
): Promise<FakeTools> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request: RecordedRequest = {
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(request);
      const answer = respond(request, requests.length - 1);
      const send = () => {
        if (res.destroyed) return;
        res.writeHead(answer.status ?? 200, answer.headers ?? { 'content-type': 'text/plain' });
        res.end(answer.body ?? '');
      };
      if (answer.delayMs) setTimeout(send, answer.delayMs);
      else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
