import { execa } from 'execa';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@es/testkit';
import { readRunRecord, recheck } from '../src/index.js';

/**
 * One run of scripts/chaos with `args`; resolves to its output, its report, and the
 * violations of a check in the report's line for `row` (NaN when absent).
 */
async function chaosRun(args: string[], row: string, timeout: number) {
  const dir = mkdtempSync(join(tmpdir(), 'es-chaos-planted-'));
  const out = join(dir, 'report.md');
  const run = await execa('bash', [join(repoRoot, 'scripts', 'chaos'), ...args, '--out', out], {
    reject: false,
    all: true,
    timeout,
  });
  const report = readFileSync(out, 'utf8');
  const line = report.split('\n').find((l) => l.startsWith(`- **${row}`));
  const violations = (check: string) =>
    Number(new RegExp(`${check} (\\d+)`).exec(line ?? '')?.[1] ?? 'NaN');
  // The kept history re-judges to the same figures.
  const { mismatches } = recheck(readRunRecord(join(dir, 'report-history.jsonl.gz')));
  return { run, report, line, violations, mismatches };
}

// Every family of checks must see a real fault in a real run, or a recorder that stopped
// filling a field would pass unnoticed: one run of scripts/chaos (a worker SIGKILL, whose
// replacement is submitted) with one fault planted per family (routing, content,
// submissions, request outcomes), which must exit 1 and name each of them; and one short
// run of engines dying mid-stream with a proxy that continues from the prompt alone, which
// the engines' request logs (restarts) and the content check must both catch.
describe('scripts/chaos with faults planted on purpose', () => {
  it('exits 1 and reports the stale routing, the dropped chunks, the double submission and the silent cuts', async () => {
    const { run, report, line, violations, mismatches } = await chaosRun(
      [
        '--only',
        'worker-kill',
        '--max-nodes',
        '2',
        '--plant',
        'stale-routing,drop-chunk,double-submit,silent-cut',
      ],
      'whole run',
      540_000,
    );
    expect(run.exitCode, run.all?.slice(-3000)).toBe(1);
    expect(report).toContain(
      '- Planted faults: stale-routing, drop-chunk, double-submit, silent-cut',
    );
    expect(line).toBeDefined();
    expect.soft(violations('attempts to workers out of routing')).toBeGreaterThan(0);
    expect.soft(violations('content not what the engine produced')).toBeGreaterThan(0);
    expect.soft(violations('jobs the scheduler never submitted')).toBeGreaterThan(0);
    expect.soft(violations('silent truncations')).toBeGreaterThan(0);
    // The chaos run prints what it found broken on stderr.
    expect(run.all).toContain('BROKEN whole run');
    expect(mismatches).toEqual([]);
  });

  it('exits 1 and reports generations continued from scratch as restarts and as wrong content', async () => {
    const { run, report, line, violations, mismatches } = await chaosRun(
      [
        '--only',
        'engine-die-mid-stream',
        '--misbehaviour-seconds',
        '10',
        '--plant',
        'continue-from-scratch',
      ],
      'engine dies mid-stream',
      300_000,
    );
    expect(run.exitCode, run.all?.slice(-3000)).toBe(1);
    expect(report).toContain('- Planted faults: continue-from-scratch');
    expect(line).toBeDefined();
    expect.soft(violations('generations restarted from scratch')).toBeGreaterThan(0);
    expect.soft(violations('content not what the engine produced')).toBeGreaterThan(0);
    // The rest of the row holds: the engines logged every answer, and the cut streams were
    // continued (wrongly), not cut.
    expect.soft(violations('answers missing from the engine request logs')).toBe(0);
    expect.soft(violations('streams cut')).toBe(0);
    expect(run.all).toContain('BROKEN engine dies mid-stream');
    expect(mismatches).toEqual([]);
  });
});

// The data plane's promises (issue 17), each broken on purpose in a real run: every data-plane
// process killed and none respawned; the scheduler serving /v1 itself (the old layout), so
// its SIGKILL closes the client port, and kept down past the replacement's wait.
describe('scripts/chaos with the data plane broken on purpose', () => {
  it('exits 1 and reports failures the killed process did not carry, an unanswered port and no respawn', async () => {
    const { run, line, violations, mismatches } = await chaosRun(
      [
        '--only',
        'es-proxy-kill',
        '--max-nodes',
        '2',
        '--plant',
        'proxy-kill-every-process,proxy-no-respawn',
      ],
      'es-proxy SIGKILL',
      420_000,
    );
    expect(run.exitCode, run.all?.slice(-3000)).toBe(1);
    expect(line).toBeDefined();
    expect.soft(violations('failed requests the killed process did not carry')).toBeGreaterThan(0);
    expect.soft(violations('health probes unanswered after the kill')).toBeGreaterThan(0);
    expect.soft(violations('killed process not respawned within 10 s')).toBe(1);
    expect.soft(violations('the kill hit no request in flight')).toBe(0);
    expect(run.all).toContain('BROKEN es-proxy SIGKILL');
    expect(mismatches).toEqual([]);
  });

  it('exits 1 and reports lost requests, cut streams, gaps and a node not replaced without a separate data plane', async () => {
    const { run, report, violations, mismatches } = await chaosRun(
      [
        '--only',
        'scheduler-restart,scheduler-down',
        '--max-nodes',
        '2',
        // The outage of CI's profile, not the long profile's 120 s.
        '--scheduler-down-seconds',
        '10',
        '--plant',
        'in-process-data-plane,scheduler-stays-down',
      ],
      'scheduler SIGKILL + restart',
      720_000,
    );
    expect(run.exitCode, run.all?.slice(-3000)).toBe(1);
    expect(report).toContain('--proxy-processes 0');
    // The restart: clients without retries meet a closed port.
    expect.soft(violations('gaps over 1 s in successful responses')).toBeGreaterThan(0);
    expect(run.all).toMatch(/BROKEN scheduler SIGKILL \+ restart: .*lost requests \(\d+\)/);
    // The outage: nothing served for its length, and the dead node not replaced in time.
    const down = report.split('\n').find((l) => l.startsWith('- **scheduler down'));
    expect(down).toMatch(/gaps over 1 s in successful responses [1-9]/);
    expect(down).toMatch(/dead worker's node not replaced after the restart 1/);
    expect(mismatches).toEqual([]);
  });
});
