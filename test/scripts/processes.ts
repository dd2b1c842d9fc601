/** Process checks shared by the scripts' tests. */
import { readFileSync, readdirSync } from 'node:fs';
import { processAlive } from '../../packages/testkit/src/index.js';

/** Live processes whose command line or environment mentions `needle` (e.g. a temp dir). */
export function processesMentioning(needle: string): { pid: number; args: string }[] {
  const out: { pid: number; args: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const pid = Number(entry);
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if ((args.includes(needle) || env.includes(needle)) && processAlive(pid)) {
        out.push({ pid, args });
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
}
