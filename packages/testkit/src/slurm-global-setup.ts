import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import type { TestProject } from 'vitest/node';
import { devClusterDir, devClusterScript } from './dev-cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `SLURM_CONF` of the dev cluster the integration tests run against. */
    slurmConf: string;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * vitest global setup of the `integration` project: starts the SLURM dev cluster once
 * (`scripts/slurm-dev-cluster.sh up`, idempotent: it also resumes drained nodes), sets
 * `process.env.SLURM_CONF` and provides it as `inject('slurmConf')`. Teardown stops the
 * cluster only if this run started it and no other test run still uses it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const status = await execa('bash', [devClusterScript, 'status'], {
    reject: false,
    timeout: 30_000,
    stdin: 'ignore',
  });
  const started = status.exitCode !== 0;
  const up = await execa('bash', [devClusterScript, 'up'], {
    timeout: 15 * 60_000,
    stdin: 'ignore',
    stderr: 'inherit',
  });
  const match = /export SLURM_CONF=(.+)/.exec(String(up.stdout));
  const conf =
    match?.[1]?.trim().replace(/^'|'$/g, '') ?? join(devClusterDir(), 'etc', 'slurm.conf');
  process.env.SLURM_CONF = conf;
  project.provide('slurmConf', conf);

  // A lease per test run, so one run's teardown does not stop the cluster under another.
  const leases = join(devClusterDir(), 'run', 'leases');
  mkdirSync(leases, { recursive: true });
  const lease = join(leases, String(process.pid));
  writeFileSync(lease, '');

  return async () => {
    rmSync(lease, { force: true });
    if (!started || process.env.ES_KEEP_DEV_CLUSTER === '1') return;
    const others = readdirSync(leases).filter((name) => alive(Number(name)));
    if (others.length > 0) return;
    await execa('bash', [devClusterScript, 'down'], {
      reject: false,
      timeout: 120_000,
      stdin: 'ignore',
    });
  };
}
