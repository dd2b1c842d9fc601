/**
 * What the mock engine must have produced for a request of the load: its own definition
 * (`expectedGeneration` of `@es/mock-engine`, the function the engine itself generates with),
 * never a copy, so the checker and the engine cannot drift apart.
 */
import { expectedGeneration } from '@es/mock-engine';
import type { RequestRecord } from './history.js';

/** The exact text the engine produces for `request` (a one-message chat at temperature 0). */
export function expectedContent(request: RequestRecord): string | undefined {
  if (request.prompt === undefined || request.maxTokens === undefined) return undefined;
  return expectedGeneration(
    { kind: 'chat', messages: [{ role: 'user', content: request.prompt }] },
    { maxTokens: request.maxTokens },
  ).text;
}
