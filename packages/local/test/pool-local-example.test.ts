import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PoolEvent } from '@es/pool';
import { until } from '@es/testkit';
import type { PoolLocalExample } from '../../../examples/pool-local/main.js';
import { startPoolLocalExample } from '../../../examples/pool-local/main.js';

let example: PoolLocalExample | undefined;
let logDir: string | undefined;

afterEach(async () => {
  await example?.close();
  example = undefined;
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

describe('examples/pool-local', () => {
  it('fills the local nodes, serves from every GPU slice, and replaces a preempted node', async () => {
    const events: PoolEvent[] = [];
    logDir = mkdtempSync(join(tmpdir(), 'es-pool-local-'));
    example = await startPoolLocalExample({
      nodes: 3,
      maxNodes: 2,
      logDir,
      intervalMs: 200,
      onEvent: (e) => events.push(e),
    });
    const { registry, provider } = example;

    // Two nodes x (4 GPUs / TP 2) = four routable workers, each reachable at its baseUrl.
    const ready = await until(() => {
      const workers = registry.routable('demo');
      return workers.length === 4 ? workers : undefined;
    });
    const answers = await Promise.all(
      ready.map(
        async (w) => (await fetch(w.baseUrl)).json() as Promise<{ worker: string; gpus: number[] }>,
      ),
    );
    expect(answers.map((a) => a.worker).sort()).toEqual(ready.map((w) => w.id).sort());
    expect(answers.map((a) => a.gpus.join(',')).sort()).toEqual(['0,1', '0,1', '2,3', '2,3']);
    expect(provider.nodes().filter((n) => n.jobId !== undefined)).toHaveLength(2);

    // Preempt one node: its workers drain out of routing, and a replacement fills the slot.
    const victim = ready[0]!.id.split('.')[0]!;
    expect(provider.preempt(victim)).toBe(true);
    await until(() =>
      registry.routable('demo').every((w) => !w.id.startsWith(`${victim}.`)) ? true : undefined,
    );
    const replaced = await until(() => {
      const workers = registry.routable('demo');
      return workers.length === 4 && workers.every((w) => !w.id.startsWith(`${victim}.`))
        ? workers
        : undefined;
    });
    const jobs = new Set(replaced.map((w) => w.id.split('.')[0]));
    expect(jobs.size).toBe(2);
    // Never more than maxNodes jobs at once: the third local node stays idle or hosts the replacement.
    expect(provider.nodes().filter((n) => n.jobId !== undefined).length).toBeLessThanOrEqual(2);
    // Out by its drain notice, or, when a loaded machine delivers that notice after the tick
    // saw the job end, as gone: either way out of routing (checked above) and replaced once.
    expect(
      events.some((e) => (e.type === 'draining' || e.type === 'gone') && e.jobId === victim),
    ).toBe(true);
    expect(events.filter((e) => e.type === 'submitted')).toHaveLength(3);

    const status = example.reconciler.status().deployments[0];
    expect(status?.readyWorkers).toBe(4);
    expect(status?.permanentError).toBeUndefined();
  });
});
