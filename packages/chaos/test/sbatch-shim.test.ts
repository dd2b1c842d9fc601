import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createSbatchShim, maxCallsUnderBackoff, SBATCH_FAILURES } from '../src/index.js';

describe('createSbatchShim', () => {
  it('passes through, fails like SLURM per mode, and logs every call', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shim-'));
    const shim = createSbatchShim(dir, { realSbatch: '/bin/echo' });
    const run = () =>
      spawnSync('sbatch', ['--parsable', 'x'], { env: { PATH: shim.path }, encoding: 'utf8' });
    expect(run().stdout).toBe('--parsable x\n');
    shim.setMode('transient');
    const transient = run();
    expect(transient.status).toBe(1);
    expect(transient.stderr.trim()).toBe(SBATCH_FAILURES.transient);
    shim.setMode('policy');
    expect(run().stderr).toContain('QOSMaxSubmitJobPerUserLimit');
    expect(shim.calls()).toHaveLength(3);
  });

  it('submits twice in mode double (a planted fault) and tells only the second submission', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shim-'));
    const counter = join(dir, 'count');
    // A fake sbatch that hands out job ids 1, 2, 3, ...
    const fake = join(dir, 'fake-sbatch');
    writeFileSync(
      fake,
      `#!/usr/bin/env bash\nn=$(( $(cat ${counter} 2>/dev/null || echo 0) + 1 ))\necho $n > ${counter}\necho $n\n`,
    );
    chmodSync(fake, 0o755);
    const shim = createSbatchShim(join(dir, 'shim'), { realSbatch: fake });
    shim.setMode('double');
    const out = spawnSync('sbatch', ['--parsable'], { env: { PATH: shim.path }, encoding: 'utf8' });
    expect(out.stdout).toBe('2\n');
    expect(readFileSync(counter, 'utf8').trim()).toBe('2');
  });

  it('hangs in mode hang until released', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shim-'));
    const shim = createSbatchShim(dir, { realSbatch: '/bin/echo' });
    shim.setMode('hang');
    const started = Date.now();
    const child = execFileSync(
      'bash',
      ['-c', `PATH=${shim.path}; sbatch x >/dev/null 2>&1 & sleep 0.5; echo started`],
      {
        encoding: 'utf8',
      },
    );
    expect(child.trim()).toBe('started');
    await new Promise((r) => setTimeout(r, 200));
    expect(shim.releaseHung()).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('maxCallsUnderBackoff', () => {
  it('allows the calls of a 2 s doubling backoff with jitter ≥ 0.5, plus one', () => {
    // Fastest gaps 1, 2, 4, 8, 16 s: calls at 0, 1, 3, 7, 15, 31 s.
    expect(maxCallsUnderBackoff(30_000)).toBe(6);
    expect(maxCallsUnderBackoff(500)).toBe(2);
    // A 1 s reconcile tick retrying every tick would make 30 calls: far beyond.
    expect(maxCallsUnderBackoff(30_000)).toBeLessThan(30);
  });
});
