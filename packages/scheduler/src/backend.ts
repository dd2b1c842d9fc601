/**
 * Where node jobs run: the backend (SLURM, or worker processes on this machine), the
 * provider that submits them, the URL they report to and the worker they start.
 */
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createLocalProvider } from '@es/local';
import type { NodeProvider } from '@es/pool';
import { createSlurmProvider } from '@es/slurm';
import { WORKER_CLI_PATH, type Backend, type SchedulerSettings } from './settings.js';

/** The backend a scheduler runs: `auto` is `slurm` when `sbatch` is on the PATH. */
export function resolveBackend(backend: Backend): 'slurm' | 'local' {
  return backend === 'auto' ? (hasSbatch() ? 'slurm' : 'local') : backend;
}

function hasSbatch(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v sbatch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** This Node and the worker binary of the checkout this package runs from. */
export function defaultWorkerCommand(): string[] {
  // src/ and dist/ are both one level below packages/scheduler: three levels to the root.
  const cli = fileURLToPath(new URL(`../../../${WORKER_CLI_PATH}`, import.meta.url));
  return [process.execPath, cli];
}

/** URL the workers (or clients) use to reach a listener on `host:port`. */
export function advertisedUrl(host: string, port: number, backend: 'slurm' | 'local'): string {
  if (backend === 'local') return `http://127.0.0.1:${port}`;
  // A wildcard listen address is advertised as $ES_SCHEDULER_HOST, else the host name.
  const name =
    host === '0.0.0.0' || host === '::' ? process.env.ES_SCHEDULER_HOST || hostname() : host;
  return `http://${name.includes(':') ? `[${name}]` : name}:${port}`;
}

/** The provider of `backend`: SLURM's, or local jobs under `logDir`. */
export function createBackendProvider(
  backend: 'slurm' | 'local',
  settings: Pick<SchedulerSettings, 'localNodes' | 'deployments'>,
  logDir: string,
): NodeProvider {
  if (backend === 'slurm') return createSlurmProvider({});
  // Local jobs end with the scheduler (a rehearsal should leave nothing behind), but the
  // state file lets a scheduler that crashed re-adopt the ones still running.
  return createLocalProvider({
    nodes: settings.localNodes,
    gpusPerNode: Math.max(...settings.deployments.map((d) => d.gpusPerNode)),
    killOnClose: true,
    stateFile: `${logDir}/local-jobs.json`,
    // SLURM's default KillWait. The workers' drain (grace, hand-over a margin before its
    // end, engine stop: at most 26 s with the notices) must run whole before the
    // SIGKILL; the provider's own default of 5 s cut it short, engines included.
    killGraceMs: 30_000,
  });
}
