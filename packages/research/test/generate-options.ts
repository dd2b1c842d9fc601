/** GenerateOptions for tests: the mock engine, local fake Serper/Jina, the bundled template. */
import { PassThrough } from 'node:stream';
import type { GenerateOptions } from '../src/generate.js';

export function generateOptions(
  engineUrl: string,
  toolsUrl: string,
  over: Partial<GenerateOptions>,
): GenerateOptions {
  return {
    schedulerUrl: engineUrl,
    dataset: 'sample',
    outputDir: '',
    // The mock engine serves no real model: its template must be asked for by name.
    chatTemplate: 'bundled-test',
    tools: {
      serperApiKey: 'k',
      serperBaseUrl: toolsUrl,
      // With a key, open_url goes to the (fake) reader, never to the page's own host.
      jinaApiKey: 'j',
      jinaBaseUrl: toolsUrl,
      retryBaseMs: 5,
      maxRetries: 1,
    },
    log: new PassThrough(),
    ...over,
  };
}
