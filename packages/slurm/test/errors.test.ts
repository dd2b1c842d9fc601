import { classifyProviderError, isProviderError, ProviderError } from '@es/pool';
import { describe, expect, it } from 'vitest';
import { classifySlurmMessage, SlurmError } from '../src/index.js';

describe('classifySlurmMessage', () => {
  // Messages captured from SLURM 22.05 on the dev cluster, plus documented limit messages.
  it.each([
    [
      'slurm_load_jobs error: Socket timed out on send/recv operation',
      'SLURM_SOCKET_TIMEOUT',
      'transient',
    ],
    [
      'slurm_load_jobs error: Unable to contact slurm controller (connect failure)',
      'SLURM_UNREACHABLE',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)',
      'SLURM_UNREACHABLE',
      'transient',
    ],
    [
      'scancel: error: Kill job error on job id 5: Unable to contact slurm controller (connect failure)',
      'SLURM_UNREACHABLE',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received',
      'SLURM_UNREACHABLE',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Resource temporarily unavailable',
      'SLURM_BUSY',
      'transient',
    ],
    ['squeue: error: RPC rate limit exceeded, please retry', 'SLURM_BUSY', 'transient'],
    [
      'sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying',
      'SLURM_BUSY',
      'transient',
    ],
    [
      "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
      'SLURM_POLICY_LIMIT',
      'policy',
    ],
    ['sbatch: error: AssocMaxJobsLimit', 'SLURM_POLICY_LIMIT', 'policy'],
    ['sbatch: error: AssocMaxSubmitJobLimit', 'SLURM_POLICY_LIMIT', 'policy'],
    ['sbatch: error: QOSGrpGRES', 'SLURM_POLICY_LIMIT', 'policy'],
    [
      'sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified',
      'SLURM_INVALID_PARTITION',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified',
      'SLURM_INVALID_ACCOUNT',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid qos specification',
      'SLURM_INVALID_QOS',
      'permanent',
    ],
    [
      'sbatch: unrecognized option \'--bogus-opt\'\nTry "sbatch --help" for more information',
      'SLURM_INVALID_REQUEST',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Requested node configuration is not available',
      'SLURM_INVALID_REQUEST',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid feature specification',
      'SLURM_INVALID_REQUEST',
      'permanent',
    ],
    ['sbatch: error: Invalid --time specification', 'SLURM_INVALID_REQUEST', 'permanent'],
    ['scancel: error: Invalid job id abc', 'SLURM_INVALID_REQUEST', 'permanent'],
    ['something nobody has seen before', 'SLURM_FAILED', 'transient'],
    ['', 'SLURM_FAILED', 'transient'],
  ])('%j → %s (%s)', (stderr, code, kind) => {
    expect(classifySlurmMessage(stderr)).toEqual({ code, kind });
  });
});

describe('SlurmError', () => {
  it('carries its fields and is understood by classifyProviderError', () => {
    const cause = new Error('inner');
    const error = new SlurmError('sbatch failed', {
      code: 'SLURM_POLICY_LIMIT',
      kind: 'policy',
      command: ['sbatch', '--parsable', '/x.sbatch'],
      exitCode: 1,
      stderr: 'QOSMaxSubmitJobPerUserLimit',
      cause,
    });
    expect(error).toBeInstanceOf(Error);
    expect(error).toBeInstanceOf(ProviderError);
    expect(isProviderError(error)).toBe(true);
    expect(error).toMatchObject({
      name: 'SlurmError',
      code: 'SLURM_POLICY_LIMIT',
      kind: 'policy',
      ambiguous: false,
      exitCode: 1,
      cause,
    });
    expect(classifyProviderError(error)).toEqual({
      kind: 'policy',
      ambiguous: false,
      message: 'sbatch failed',
    });
  });
});
