/**
 * GPUs per node from the allocation, on the dev cluster's node of another size: gpu5, 4
 * GPUs, alone in partition `small` (the 8-GPU nodes of `low` and `high` are untouched). Jobs
 * are submitted as the scheduler submits them (`createSlurmProvider`), and run the real
 * es-worker (apps/worker/dist) with the mock engine against a fake scheduler.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NodeRequest } from '@es/pool';
import type { RegisterRequest } from '@es/protocol';
import {
  cancelByNamePrefix,
  runSlurm,
  slurmEnv,
  startFakeScheduler,
  uniqueJobPrefix,
  waitForJob,
} from '@es/testkit';
import type { FakeScheduler } from '@es/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createSlurmProvider } from '../src/index.js';

const WORKER = fileURLToPath(new URL('../../../apps/worker/dist/cli.mjs', import.meta.url));
const prefix = uniqueJobPrefix('gpus');
const provider = createSlurmProvider({ env: slurmEnv() });

afterAll(async () => {
  await cancelByNamePrefix(prefix);
});

/** A node request in partition `small` running es-worker with `workerFlags`. */
async function workerRequest(
  label: string,
  scheduler: FakeScheduler,
  gpusPerNode: number,
  workerFlags: string[],
  wholeNodeGpus: boolean,
): Promise<NodeRequest> {
  const logDir = await mkdtemp(join(tmpdir(), `es-gpus-${label}-`));
  return {
    deployment: 'd',
    name: `${prefix}${label}`,
    tag: `${prefix}${label}-tag`,
    gpusPerNode,
    command: [
      process.execPath,
      WORKER,
      ...['--scheduler-url', scheduler.url, '--engine', 'mock', '--model', 'mock-model'],
      ...['--base-port', '0', '--log-dir', join(logDir, 'engines')],
      ...['--drain-grace', '1', '--kill-grace', '2'],
      '--engine-extra-args=--ttft 0 --tokens-per-second 0',
      ...workerFlags,
    ],
    env: {},
    logDir,
    cluster: { partition: 'small', ...(wholeNodeGpus ? { wholeNodeGpus: true } : {}) },
  };
}

/** Submits, waits for `instances` ready engines, and returns what the worker registered. */
async function runWorkerJob(request: NodeRequest, scheduler: FakeScheduler, instances: number) {
  const id = await provider.submit(request);
  const job = await waitForJob(id, (j) => j.JobState === 'RUNNING', 60_000);
  await expect
    .poll(
      () =>
        new Set(
          scheduler
            .of('heartbeat')
            .filter((call) => call.body.state === 'ready')
            .map((call) => call.workerId),
        ).size,
      { timeout: 90_000, interval: 250 },
    )
    .toBe(instances);
  const registered = scheduler
    .of('register')
    .map((call) => call.body as unknown as RegisterRequest)
    .sort((a, b) => a.index - b.index);
  const out = await readFile(join(request.logDir, `${request.name}-${id}.out`), 'utf8');
  return { id, job, registered, out };
}

/**
 * Cancels the jobs named `name` and waits until they have ended (the scheduler still
 * answering their drain), so the node is free for the next test.
 */
async function endJobs(name: string): Promise<void> {
  for (const id of await cancelByNamePrefix(name)) {
    await waitForJob(id, (j) => !['RUNNING', 'COMPLETING', 'PENDING'].includes(j.JobState ?? ''));
  }
}

/** What SLURM says of a job's GPUs: asked for per node, and allocated. */
async function jobGpus(id: string): Promise<{ asked?: string; allocated?: string }> {
  const shown = (await runSlurm('scontrol', ['show', 'job', '-d', id])).stdout;
  return {
    asked: /TresPerNode=(\S+)/.exec(shown)?.[1],
    allocated: /JOB_GRES=(\S+)/.exec(shown)?.[1],
  };
}

/** The worker's log lines (pino JSON) from a job's output. */
function logLines(out: string): { level: number; msg: string }[] {
  return out
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { level: number; msg: string });
}

describe('GPUs per node from the allocation, on a 4-GPU node', () => {
  it('a whole-node job gets all 4 GPUs though it asks for at least 2, and runs 4 engines of TP 1', async () => {
    const scheduler = await startFakeScheduler(250);
    // --gpus-per-node 2 reaches both sbatch (the minimum) and es-worker (its fallback).
    const request = await workerRequest(
      'whole',
      scheduler,
      2,
      ['--tensor-parallel-size', '1', '--gpus-per-node', '2'],
      true,
    );
    try {
      const { id, job, registered, out } = await runWorkerJob(request, scheduler, 4);
      expect(job.NodeList).toBe('gpu5');
      // Asked for at least 2, allocated the whole node: every GPU.
      expect(await jobGpus(id)).toEqual({ asked: 'gres:gpu:2', allocated: 'gpu:4' });
      expect(job.OverSubscribe).toBe('NO');
      expect(registered.map((r) => [r.node, r.gpus])).toEqual([
        ['gpu5', [0]],
        ['gpu5', [1]],
        ['gpu5', [2]],
        ['gpu5', [3]],
      ]);
      expect(registered.every((r) => r.jobId === id)).toBe(true);
      const lines = logLines(out);
      expect(lines).toContainEqual(
        expect.objectContaining({
          msg: 'GPUs 0,1,2,3 (from CUDA_VISIBLE_DEVICES): 4 engine instances',
        }),
      );
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 40,
          msg:
            '--gpus-per-node is 2 but SLURM allocated 4 GPUs on this node ' +
            '(CUDA_VISIBLE_DEVICES=0,1,2,3): planning from the 4 allocated',
        }),
      );
    } finally {
      await endJobs(request.name);
      await scheduler.close();
    }
  });

  it('TP 3 on the 4 GPUs SLURM allocated: one engine on GPUs 0-2, GPU 3 named idle', async () => {
    const scheduler = await startFakeScheduler(250);
    // Today's request: exactly --gpus-per-node=4.
    const request = await workerRequest(
      'tp3',
      scheduler,
      4,
      ['--tensor-parallel-size', '3', '--gpus-per-node', '4'],
      false,
    );
    try {
      const { id, job, registered, out } = await runWorkerJob(request, scheduler, 1);
      expect(job.NodeList).toBe('gpu5');
      expect(await jobGpus(id)).toEqual({ asked: 'gres:gpu:4', allocated: 'gpu:4' });
      expect(registered.map((r) => r.gpus)).toEqual([[0, 1, 2]]);
      expect(logLines(out)).toContainEqual(
        expect.objectContaining({
          level: 40,
          msg:
            'GPU 3 idle: 4 GPUs (from CUDA_VISIBLE_DEVICES) do not divide into slices of tensor ' +
            'parallel size 3; 1 instance uses GPUs 0-2. Use every GPU with a tensor parallel size ' +
            'that divides 4 (1, 2, 4), or nodes with a multiple of 3 GPUs',
        }),
      );
    } finally {
      await endJobs(request.name);
      await scheduler.close();
    }
  });
});
