import { createRegistry } from '@es/pool';
import type { Registry } from '@es/pool';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp } from '../src/index.js';
import { startFakeEngine } from './fake-engine.js';
import { registerReadyWorker } from './registry-worker.js';
import type { FakeEngine } from './fake-engine.js';

// The proxy against the real registry of @es/pool (the PoolView the scheduler passes).
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function readyWorker(
  registry: Registry,
  jobId: string,
): Promise<{ id: string; fake: FakeEngine }> {
  const fake = await startFakeEngine(jobId);
  cleanups.push(() => fake.close());
  const { port } = new URL(fake.url);
  const workerId = registerReadyWorker(registry, jobId, Number(port));
  return { id: workerId, fake };
}

function setup() {
  const registry = createRegistry({ ejectAfterFailures: 2 });
  registry.addDeployment({
    name: 'qwen',
    model: '/models/qwen',
    servedModelName: 'qwen',
    engine: 'mock',
    tensorParallelSize: 1,
    gpusPerNode: 1,
    maxNodes: 4,
  });
  const app = createProxyApp({ pool: registry, queue: { timeoutMs: 2000 } });
  cleanups.push(() => app.close());
  const ask = () =>
    app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'qwen', messages: [{ role: 'user', content: 'hi' }] }),
    });
  return { registry, app, ask };
}

describe('with the @es/pool registry', () => {
  it('waits for a worker to become ready, then serves through it', async () => {
    const { registry, ask } = setup();
    const pending = ask();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { fake } = await readyWorker(registry, '100');
    expect((await pending).status).toBe(200);
    expect(fake.seen).toHaveLength(1);
  });

  it('sends nothing to a draining worker, and the in-flight count is back to zero', async () => {
    const { registry, ask } = setup();
    const a = await readyWorker(registry, '101');
    const b = await readyWorker(registry, '102');
    registry.drain(a.id, 'SIGTERM');
    for (let i = 0; i < 10; i++) expect((await ask()).status).toBe(200);
    expect(a.fake.seen).toHaveLength(0);
    expect(b.fake.seen).toHaveLength(10);
    expect(registry.routable('qwen').map((w) => w.inFlight)).toEqual([0]);
  });

  it('lets the registry eject a worker that keeps failing, before any heartbeat says so', async () => {
    const { registry, ask } = setup();
    const bad = await readyWorker(registry, '103');
    const good = await readyWorker(registry, '104');
    bad.fake.mode = { kind: 'reset' };
    for (let i = 0; i < 12; i++) expect((await ask()).status).toBe(200);
    expect(registry.routable('qwen').map((w) => w.id)).toEqual([good.id]);
    // Two failures eject it: it saw at most that many requests.
    expect(bad.fake.seen.length).toBeLessThanOrEqual(2);
  });
});
