import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isGroupAlive, signalGroup, terminateGroup, type GroupTimers } from '../src/index.js';

/** A detached shell that leads its own group and starts a grandchild in it. */
function spawnGroup(trapTerm: boolean) {
  const script = trapTerm ? "trap '' TERM; sleep 30 & wait; wait" : 'sleep 30 & wait';
  const child = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited };
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('terminateGroup', () => {
  it('ends a group that honours SIGTERM within the grace, sweeping what its leader left', async () => {
    const { child, exited } = spawnGroup(false);
    await until(() => isGroupAlive(child.pid));
    const termination = terminateGroup(child.pid, { graceMs: 10_000, exited, sweep: true });
    expect(await termination.done).toBe('exited');
    await until(() => !isGroupAlive(child.pid));
  });

  it('SIGKILLs a group that ignores SIGTERM after the grace and calls onKill', async () => {
    const { child, exited } = spawnGroup(true);
    await new Promise((r) => setTimeout(r, 200)); // let the trap be installed
    let killed = 0;
    const termination = terminateGroup(child.pid, {
      graceMs: 300,
      exited,
      onKill: () => killed++,
    });
    expect(await termination.done).toBe('killed');
    expect(killed).toBe(1);
    await exited;
    await until(() => !isGroupAlive(child.pid));
  });

  it('sends the SIGKILL exactly at the grace (injected timers) and not after cancel', () => {
    const pending: Array<{ fire: () => void; ms: number; cleared: boolean }> = [];
    const timers: GroupTimers = {
      setTimeout: (fire, ms) => {
        const t = { fire, ms, cleared: false };
        pending.push(t);
        return t;
      },
      clearTimeout: (t) => {
        (t as { cleared: boolean }).cleared = true;
      },
    };
    let kills = 0;
    // pid 999_999_999 cannot exist: signals fail quietly.
    const t = terminateGroup(999_999_999, { graceMs: 1234, timers, onKill: () => kills++ });
    expect(pending.map((p) => p.ms)).toEqual([1234]);
    t.cancel();
    expect(pending[0]!.cleared).toBe(true);
    const u = terminateGroup(999_999_999, { graceMs: 50, timers, onKill: () => kills++ });
    pending[1]!.fire();
    expect(kills).toBe(1);
    return expect(u.done).resolves.toBe('killed');
  });

  it('never signals pid 0, 1 or a missing pid (which would hit the caller or init)', () => {
    expect(signalGroup(undefined, 'SIGTERM')).toBe(false);
    expect(signalGroup(0, 'SIGTERM')).toBe(false);
    expect(signalGroup(1, 'SIGTERM')).toBe(false);
  });
});
