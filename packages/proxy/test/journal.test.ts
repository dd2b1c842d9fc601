import { createRegistry, type Registry } from '@es/pool';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyApp, type RoutingJournalEntry } from '../src/index.js';
import { startFakeEngine } from './fake-engine.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Two ready workers behind a real registry, a proxy that journals into an array. */
async function setup(staleRoutingMs?: number) {
  const registry: Registry = createRegistry({
    deployments: [
      {
        name: 'm',
        model: '/models/m',
        engine: 'mock',
        tensorParallelSize: 4,
        gpusPerNode: 8,
        maxNodes: 1,
      },
    ],
  });
  const ids: string[] = [];
  for (const index of [0, 1]) {
    const engine = await startFakeEngine(`e${index}`);
    cleanups.push(() => engine.close());
    const port = Number(new URL(engine.url).port);
    const { workerId } = registry.register({
      deployment: 'm',
      jobId: '7',
      restartCount: 0,
      index,
      host: '127.0.0.1',
      port,
      gpus: [index],
      engine: 'mock',
      model: '/models/m',
      node: 'n1',
      state: 'ready',
    });
    ids.push(workerId);
  }
  const journal: RoutingJournalEntry[] = [];
  const app = createProxyApp({
    pool: registry,
    journal: (entry) => journal.push(entry),
    ...(staleRoutingMs === undefined ? {} : { plantedFaults: { staleRoutingMs } }),
  });
  cleanups.push(() => app.close());
  const send = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const response = await app.request('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': `r${journal.length}-${i}` },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(response.status).toBe(200);
      await response.text();
    }
  };
  return { registry, ids, journal, send };
}

/** Attempts that went to a worker after it left routing (and before it came back). */
function afterLeaving(journal: readonly RoutingJournalEntry[]): RoutingJournalEntry[] {
  const out = new Set<string>();
  const bad: RoutingJournalEntry[] = [];
  for (const e of journal) {
    if (e.type === 'route') {
      if (e.routable) out.delete(e.workerId);
      else out.add(e.workerId);
    } else if (out.has(e.workerId)) bad.push(e);
  }
  return bad;
}

describe('routing journal', () => {
  it('records every attempt and every routing change, in order; nothing goes to a drained worker', async () => {
    const { registry, ids, journal, send } = await setup();
    await send(6);
    registry.drain(ids[0]!, 'SIGTERM');
    await send(6);
    const drained = journal.findIndex((e) => e.type === 'route' && !e.routable);
    expect(journal[drained]).toMatchObject({
      type: 'route',
      workerId: ids[0],
      routable: false,
      reason: 'draining: SIGTERM',
    });
    const attempts = journal.filter((e) => e.type === 'attempt');
    expect(attempts).toHaveLength(12);
    expect(attempts[0]).toMatchObject({ deployment: 'm', attempt: 1 });
    expect(journal.slice(drained + 1).every((e) => e.workerId === ids[1])).toBe(true);
    expect(afterLeaving(journal)).toEqual([]);
  });

  it('with the planted stale-routing fault, attempts reach the drained worker and the journal shows it', async () => {
    const { registry, ids, journal, send } = await setup(60_000);
    await send(2);
    registry.drain(ids[0]!, 'SIGTERM');
    await send(10);
    const bad = afterLeaving(journal);
    expect(bad.length).toBeGreaterThan(0);
    expect(bad.every((e) => e.workerId === ids[0])).toBe(true);
  });
});
