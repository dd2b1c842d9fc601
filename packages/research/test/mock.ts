/** The project's mock engine on 127.0.0.1 (port 0), generating as fast as it can. */
import { createMockEngine } from '@es/mock-engine';
import type { MockEngine, MockEngineOptions } from '@es/mock-engine';

export type { MockEngine };

export async function startMock(options: MockEngineOptions = {}): Promise<MockEngine> {
  const engine = createMockEngine({
    model: 'mock-model',
    tokensPerSecond: 0,
    ttft: 0,
    maxModelLen: 131_072,
    ...options,
  });
  await engine.listen(0, '127.0.0.1');
  return engine;
}
