import type { DeploymentStatus, JobStatus, ReconcilerStatus } from '@es/pool';
import { describe, expect, it } from 'vitest';
import { summarizeStatus } from '../src/status-model.js';

const NOW = 1_000_000;

function job(jobId: string, state: string): JobStatus {
  return {
    jobId,
    tag: `t${jobId}`,
    state,
    reason: '',
    nodes: '',
    restartCount: 0,
    ageSeconds: 1,
    retiring: false,
    drained: false,
    workers: [],
  };
}

function deployment(name: string, extra: Partial<DeploymentStatus> = {}): DeploymentStatus {
  return {
    name,
    jobName: `es-es-${name}`,
    maxNodes: 4,
    jobs: [],
    workers: [],
    readyWorkers: 0,
    submitting: 0,
    lastErrors: [],
    ...extra,
  };
}

function status(...deployments: DeploymentStatus[]): ReconcilerStatus {
  return { schedulerId: 'es', provider: 'local', running: true, listFailures: 0, deployments };
}

describe('summarizeStatus: what /cluster_status reads of the reconciler', () => {
  it('counts pending (configuring included) and running jobs over all deployments', () => {
    const summary = summarizeStatus(
      status(
        deployment('a', {
          jobs: [job('1', 'PENDING'), job('2', 'RUNNING'), job('3', 'COMPLETED')],
        }),
        deployment('b', { jobs: [job('4', 'CONFIGURING'), job('5', 'RUNNING')] }),
      ),
      NOW,
    );
    expect(summary.jobCounts).toEqual({ pending: 2, running: 2 });
    expect([...summary.deploymentNotes.keys()]).toEqual(['a', 'b']);
    expect(summary.deploymentNotes.get('a')).toEqual({});
  });

  it.each([
    [
      { permanentError: 'sbatch: invalid partition' },
      { permanentError: 'sbatch: invalid partition' },
    ],
    [
      { backoff: { kind: 'policy', until: NOW + 12_400, attempts: 2, message: 'QOSMaxJobs' } },
      { backoff: 'policy failure, retrying in 12 s: QOSMaxJobs' },
    ],
    [
      // A backoff whose time has passed says 0 s, never a negative wait.
      { backoff: { kind: 'transient', until: NOW - 5_000, attempts: 1, message: 'timed out' } },
      { backoff: 'transient failure, retrying in 0 s: timed out' },
    ],
    [
      { launchFailures: { count: 3, until: NOW + 60_000, lastJobId: '17', message: 'exit 1' } },
      {
        launchFailures:
          '3 job(s) in a row ended before a worker was ready (last: job 17, exit 1); next replacement in 60 s; its output: es logs 17',
      },
    ],
  ] as const)('words a deployment that is not growing: %j', (extra, note) => {
    const summary = summarizeStatus(
      status(deployment('a', extra as Partial<DeploymentStatus>)),
      NOW,
    );
    expect(summary.deploymentNotes.get('a')).toEqual(note);
  });
});
