import { execa } from 'execa';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@es/testkit';
import { readRunRecord, recheck } from '../src/index.js';

// Every family of checks must see a real fault in a real run, or a recorder that stopped
// filling a field would pass unnoticed: one run of scripts/chaos (a worker SIGKILL, whose
// replacement is submitted) with one fault planted per family (routing, content,
// submissions, request outcomes), which must exit 1 and name
// each of them.
describe('scripts/chaos with faults planted on purpose', () => {
  it('exits 1 and reports the stale routing, the dropped chunks, the double submission and the silent cuts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-chaos-planted-'));
    const out = join(dir, 'report.md');
    const run = await execa(
      'bash',
      [
        join(repoRoot, 'scripts', 'chaos'),
        '--only',
        'worker-kill',
        '--max-nodes',
        '2',
        '--plant',
        'stale-routing,drop-chunk,double-submit,silent-cut',
        '--out',
        out,
      ],
      { reject: false, all: true, timeout: 540_000 },
    );
    const report = readFileSync(out, 'utf8');
    expect(run.exitCode, run.all?.slice(-3000)).toBe(1);
    expect(report).toContain(
      '- Planted faults: stale-routing, drop-chunk, double-submit, silent-cut',
    );
    const whole = report.split('\n').find((l) => l.startsWith('- **whole run'));
    expect(whole).toBeDefined();
    const violations = (check: string) =>
      Number(new RegExp(`${check} (\\d+)`).exec(whole ?? '')?.[1] ?? 'NaN');
    expect.soft(violations('attempts to workers out of routing')).toBeGreaterThan(0);
    expect.soft(violations('content not what the engine produced')).toBeGreaterThan(0);
    expect.soft(violations('jobs the scheduler never submitted')).toBeGreaterThan(0);
    expect.soft(violations('silent truncations')).toBeGreaterThan(0);
    // The chaos run prints what it found broken on stderr.
    expect(run.all).toContain('BROKEN whole run');
    // The kept history re-judges to the same figures, and is itself broken.
    const { mismatches } = recheck(readRunRecord(join(dir, 'report-history.jsonl.gz')));
    expect(mismatches).toEqual([]);
  });
});
