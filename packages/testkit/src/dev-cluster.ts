import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is in `packages/testkit/src` or `packages/testkit/dist`). */
export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** `scripts/slurm-dev-cluster.sh`. */
export const devClusterScript: string = join(repoRoot, 'scripts', 'slurm-dev-cluster.sh');

/** The dev cluster's folder: `ES_DEV_CLUSTER_DIR` or `<repo>/.dev-cluster`, as the script decides. */
export function devClusterDir(): string {
  return resolve(process.env.ES_DEV_CLUSTER_DIR ?? join(repoRoot, '.dev-cluster'));
}

/** `SLURM_CONF` when set (the global setup sets it), else the dev cluster's `slurm.conf`. */
export function slurmConf(): string {
  return process.env.SLURM_CONF ?? join(devClusterDir(), 'etc', 'slurm.conf');
}

/** Environment additions that point SLURM commands at the dev cluster. */
export function slurmEnv(): { SLURM_CONF: string } {
  return { SLURM_CONF: slurmConf() };
}

/** The pid of the dev cluster's slurmctld, from its pid file; undefined when not running. */
export function controllerPid(): number | undefined {
  const file = join(dirname(dirname(slurmConf())), 'run', 'slurmctld.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}
