import { readFileSync } from 'node:fs';

/**
 * Whether `pid` is a live process: it exists and is not a zombie (ended, not yet reaped by
 * its parent), which `kill -0` still reports as there.
 * @example
 * await until(() => (processAlive(pid) ? undefined : true), 5_000, 'the engine to exit');
 */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name, which is in parentheses and may hold any byte.
    const state = stat.lastIndexOf(')') + 2;
    return stat.slice(state, state + 1) !== 'Z';
  } catch {
    return false;
  }
}
