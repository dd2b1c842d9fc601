import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@es/testkit';
import { OTHER_USER_CHECKS, OTHER_USER_FAULT, SCENARIOS, scenariosOf } from '../src/index.js';

describe('the scenario registry', () => {
  it('names each scenario once, the shared scheduler’s before the ones with their own', () => {
    const names = SCENARIOS.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    const firstOwn = SCENARIOS.findIndex((s) => s.scheduler === 'own');
    expect(SCENARIOS.slice(firstOwn).every((s) => s.scheduler === 'own')).toBe(true);
    for (const s of SCENARIOS) {
      expect(s.profiles.length, s.name).toBeGreaterThan(0);
      expect(s.checks.length, s.name).toBeGreaterThan(0);
      expect(s.description, s.name).not.toBe('');
    }
  });

  it('runs every scenario in the long profile, and the CI subset in the short one', () => {
    expect(scenariosOf('long').map((s) => s.name)).toEqual(SCENARIOS.map((s) => s.name));
    expect(scenariosOf('short').map((s) => s.name)).toEqual([
      'preemption',
      'preemption-grace',
      'engine-kill',
      'engine-hang',
      'worker-kill',
      'es-proxy-kill',
      'scheduler-restart',
      'slurmctld-restart',
      'hostile',
      'other-user',
      'engine-die-mid-stream',
    ]);
  });

  it('gives the other-user scenario its report section, with every one of its checks', () => {
    const other = SCENARIOS.find((s) => s.name === 'other-user');
    expect(other?.section?.fault).toBe(OTHER_USER_FAULT);
    expect(other?.checks).toEqual(Object.values(OTHER_USER_CHECKS));
    expect(other?.rootOnly).toBe(true);
  });

  it('is what scripts/chaos --help offers to --only, in order (built CLI)', () => {
    const help = execFileSync('node', [join(repoRoot, 'packages/chaos/dist/cli.mjs'), '--help'], {
      encoding: 'utf8',
    });
    expect(help).toContain(`[--only ${SCENARIOS.map((s) => s.name).join(',')}]`);
  });
});
