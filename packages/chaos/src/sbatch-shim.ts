/**
 * A fake `sbatch` first on the scheduler's PATH: it logs every call and, depending on a mode
 * file, passes through to the real sbatch or fails the way SLURM does (policy refusal,
 * transient socket timeout, hang).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backoffDelay } from '@es/protocol';
import { ChaosError } from './errors.js';
import { killPids } from './faults.js';

/**
 * What the shim does with the next call: pass it through, fail like SLURM does (`policy`,
 * `transient`, `hang`), or `double`, a planted fault: submit twice and tell only the second
 * job id, as an sbatch retried after a lost answer would.
 */
export type SbatchMode = 'pass' | 'policy' | 'transient' | 'hang' | 'double';

/** A PATH shim for sbatch. */
export interface SbatchShim {
  /** Directory to put first on the scheduler's PATH. */
  dir: string;
  /** `PATH` value with the shim first. */
  path: string;
  setMode(mode: SbatchMode): void;
  /** Times (ms since epoch) of every call so far. */
  calls(): number[];
  /** Ends the calls hung in mode `hang` (SIGTERM: sbatch fails as when the controller drops it). */
  releaseHung(): number[];
}

/** Messages of SLURM 22.05 for each failure mode. */
export const SBATCH_FAILURES: Record<Exclude<SbatchMode, 'pass' | 'hang' | 'double'>, string> = {
  policy:
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
  transient: 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation',
};

/**
 * Create the shim in `dir` (mode `pass`). `realSbatch` defaults to the `sbatch` on PATH.
 * @example
 * const shim = createSbatchShim('/tmp/shim'); // start the scheduler with env { PATH: shim.path }
 * shim.setMode('transient');
 */
export function createSbatchShim(dir: string, options: { realSbatch?: string } = {}): SbatchShim {
  mkdirSync(dir, { recursive: true });
  let real: string;
  try {
    real =
      options.realSbatch ??
      execFileSync('sh', ['-c', 'command -v sbatch'], { encoding: 'utf8' }).trim();
  } catch (error) {
    throw new ChaosError('not_found', 'sbatch is not on PATH', { cause: error });
  }
  const modeFile = join(dir, 'mode');
  const callsFile = join(dir, 'calls');
  writeFileSync(modeFile, 'pass\n');
  writeFileSync(callsFile, '');
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  writeFileSync(
    join(dir, 'sbatch'),
    [
      '#!/usr/bin/env bash',
      `echo "$(date +%s%3N)" >> ${q(callsFile)}`,
      `mode="$(cat ${q(modeFile)} 2>/dev/null || echo pass)"`,
      'case "$mode" in',
      `  policy) echo ${q(SBATCH_FAILURES.policy)} >&2; exit 1 ;;`,
      `  transient) echo ${q(SBATCH_FAILURES.transient)} >&2; exit 1 ;;`,
      `  hang) echo $$ >> ${q(join(dir, 'hung'))}; exec sleep 3600 ;;`,
      `  double) ${q(real)} "$@" >/dev/null 2>&1; exec ${q(real)} "$@" ;;`,
      `  *) exec ${q(real)} "$@" ;;`,
      'esac',
      '',
    ].join('\n'),
  );
  chmodSync(join(dir, 'sbatch'), 0o755);
  return {
    dir,
    path: `${dir}:${process.env.PATH ?? ''}`,
    setMode(mode) {
      writeFileSync(modeFile, `${mode}\n`);
    },
    releaseHung() {
      const file = join(dir, 'hung');
      if (!existsSync(file)) return [];
      const pids = readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
      writeFileSync(file, '');
      return killPids(pids, 'SIGTERM');
    },
    calls() {
      if (!existsSync(callsFile)) return [];
      return readFileSync(callsFile, 'utf8').split('\n').filter(Boolean).map(Number);
    },
  };
}

/**
 * The most sbatch calls a capped exponential backoff allows in a window of `windowMs`
 * starting with a failure: gaps of at least `initialMs × 2^k × minJitter`, capped at
 * `maxMs × minJitter` (`backoffDelay` of `@es/protocol`, the reconciler's formula, at its
 * lowest jitter), plus the first call and one tick of slack. More calls is a hot loop.
 */
export function maxCallsUnderBackoff(
  windowMs: number,
  options: { initialMs?: number; maxMs?: number; minJitter?: number } = {},
): number {
  const initial = options.initialMs ?? 2_000;
  const max = options.maxMs ?? 60_000;
  const jitter = options.minJitter ?? 0.5;
  let calls = 1;
  let elapsed = 0;
  for (let k = 0; ; k++) {
    elapsed += backoffDelay(k + 1, { initialMs: initial, maxMs: max }) * jitter;
    if (elapsed > windowMs) return calls + 1;
    calls++;
  }
}
