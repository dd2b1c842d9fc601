import { classifyProviderError, isProviderError, ProviderError } from '@es/pool';
import { describe, expect, it } from 'vitest';
import { classifySlurmMessage, SlurmError } from '../src/index.js';

describe('classifySlurmMessage', () => {
  // Messages captured from SLURM 22.05 on the dev cluster, plus documented limit messages.
  it.each([
    [
      'slurm_load_jobs error: Socket timed out on send/recv operation',
      'slurm_socket_timeout',
      'transient',
    ],
    [
      'slurm_load_jobs error: Unable to contact slurm controller (connect failure)',
      'slurm_unreachable',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)',
      'slurm_unreachable',
      'transient',
    ],
    [
      'scancel: error: Kill job error on job id 5: Unable to contact slurm controller (connect failure)',
      'slurm_unreachable',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received',
      'slurm_unreachable',
      'transient',
    ],
    [
      'sbatch: error: Batch job submission failed: Resource temporarily unavailable',
      'slurm_busy',
      'transient',
    ],
    ['squeue: error: RPC rate limit exceeded, please retry', 'slurm_busy', 'transient'],
    [
      'sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying',
      'slurm_busy',
      'transient',
    ],
    [
      "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
      'slurm_policy_limit',
      'policy',
    ],
    ['sbatch: error: AssocMaxJobsLimit', 'slurm_policy_limit', 'policy'],
    ['sbatch: error: AssocMaxSubmitJobLimit', 'slurm_policy_limit', 'policy'],
    ['sbatch: error: QOSGrpGRES', 'slurm_policy_limit', 'policy'],
    [
      'sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified',
      'slurm_invalid_partition',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified',
      'slurm_invalid_account',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid qos specification',
      'slurm_invalid_qos',
      'permanent',
    ],
    [
      'sbatch: unrecognized option \'--bogus-opt\'\nTry "sbatch --help" for more information',
      'slurm_invalid_request',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Requested node configuration is not available',
      'slurm_invalid_request',
      'permanent',
    ],
    [
      'sbatch: error: Batch job submission failed: Invalid feature specification',
      'slurm_invalid_request',
      'permanent',
    ],
    ['sbatch: error: Invalid --time specification', 'slurm_invalid_request', 'permanent'],
    ['scancel: error: Invalid job id abc', 'slurm_invalid_request', 'permanent'],
    ['something nobody has seen before', 'slurm_failed', 'transient'],
    ['', 'slurm_failed', 'transient'],
  ])('%j → %s (%s)', (stderr, code, kind) => {
    expect(classifySlurmMessage(stderr)).toEqual({ code, kind });
  });
});

describe('SlurmError', () => {
  it('carries its fields and is understood by classifyProviderError', () => {
    const cause = new Error('inner');
    const error = new SlurmError('sbatch failed', {
      code: 'slurm_policy_limit',
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
      code: 'slurm_policy_limit',
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
