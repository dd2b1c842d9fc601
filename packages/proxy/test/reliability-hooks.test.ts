import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePlantedFaults, reliabilityHooks } from '../src/index.js';

describe('reliability hooks', () => {
  it('parses planted faults and names a wrong one', () => {
    expect(parsePlantedFaults(undefined)).toEqual({});
    expect(parsePlantedFaults('stale-routing')).toEqual({ staleRoutingMs: 5_000 });
    expect(parsePlantedFaults(' stale-routing=250 ')).toEqual({ staleRoutingMs: 250 });
    expect(() => parsePlantedFaults('stale-routing=-1')).toThrow(/positive number of ms/);
    expect(parsePlantedFaults('stale-routing=10,silent-stream-cut')).toEqual({
      staleRoutingMs: 10,
      silentStreamCut: true,
    });
    expect(parsePlantedFaults('continue-from-scratch')).toEqual({ continueFromScratch: true });
    expect(() => parsePlantedFaults('continue-from-scratch=1')).toThrow(/takes no value/);
    expect(() => parsePlantedFaults('drop-everything')).toThrow(
      /unknown fault "drop-everything"; known: stale-routing, silent-stream-cut, continue-from-scratch/,
    );
  });

  it('writes the routing journal in order, owner-only, with a start line per process and its pid on every line', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'journal-')), 'j.jsonl');
    const hooks = reliabilityHooks({ ES_ROUTING_JOURNAL: file });
    const entry = (workerId: string, routable: boolean) =>
      ({ type: 'route', time: 1, deployment: 'm', workerId, routable, reason: 'x' }) as const;
    hooks.journal?.(entry('a', true));
    hooks.journal?.(entry('a', false));
    await new Promise((resolve) => setImmediate(resolve));
    hooks.journal?.(entry('b', true));
    hooks.close();
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l: { type: string; workerId?: string }) => l.workerId ?? l.type)).toEqual([
      'start',
      'a',
      'a',
      'b',
    ]);
    // Several processes append to one journal: every line names its writer.
    expect(lines.every((l: { pid?: number }) => l.pid === process.pid)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(reliabilityHooks({}).journal).toBeUndefined();
  });
});
