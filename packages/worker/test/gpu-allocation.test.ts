/**
 * The worker plans its engines from the GPUs SLURM gave the job (`CUDA_VISIBLE_DEVICES`,
 * `SLURM_GPUS_ON_NODE`), not from `--gpus-per-node`: a fake job environment, a fake
 * scheduler, real mock engines. Each engine process is checked for the slice it got.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RegisterRequest } from '@es/protocol';
import { TEST_SECRET, startFakeScheduler } from '@es/testkit';
import { WorkerError, createWorker } from '../src/index.js';
import type { WorkerOptions } from '../src/index.js';

const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Line {
  level: 'info' | 'warn' | 'error';
  fields: object;
  message: string;
}

/** A worker of job 77 in the fake job environment `jobEnv` (SLURM's variables, no others). */
async function setup(jobEnv: Record<string, string>, overrides: Partial<WorkerOptions> = {}) {
  const scheduler = await startFakeScheduler(150);
  cleanups.push(() => scheduler.close());
  const lines: Line[] = [];
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.CUDA_VISIBLE_DEVICES;
  delete env.SLURM_GPUS_ON_NODE;
  const worker = createWorker({
    schedulerUrl: scheduler.url,
    deployment: 'default',
    engine: 'mock',
    model: 'mock-model',
    jobId: '77',
    basePort: 0,
    secret: TEST_SECRET,
    logDir: mkdtempSync(join(tmpdir(), 'es-worker-gpus-')),
    env: { ...env, ...jobEnv },
    probeIntervalMs: 50,
    drainGraceMs: 1000,
    killGraceMs: 1000,
    engineExtraArgs: '--tokens-per-second 0 --ttft 0',
    logger: {
      info: (fields, message) => lines.push({ level: 'info', fields, message }),
      warn: (fields, message) => lines.push({ level: 'warn', fields, message }),
      error: (fields, message) => lines.push({ level: 'error', fields, message }),
    },
    ...overrides,
  });
  cleanups.push(async () => {
    worker.killEnginesSync();
    await worker.stop('test cleanup');
  });
  return { scheduler, worker, lines };
}

/** `CUDA_VISIBLE_DEVICES` of a running process, from its environment. */
function processGpus(pid: number | undefined): string | undefined {
  if (pid === undefined) return undefined;
  const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  return environ.find((entry) => entry.startsWith('CUDA_VISIBLE_DEVICES='))?.slice(21);
}

/** The GPU slices the worker registered, by instance index. */
function registeredGpus(calls: { route: string; body: Record<string, unknown> }[]): number[][] {
  return calls
    .filter((call) => call.route === 'register')
    .map((call) => call.body as unknown as RegisterRequest)
    .sort((a, b) => a.index - b.index)
    .map((body) => body.gpus);
}

describe('worker GPUs from the allocation', () => {
  it('runs one engine per TP slice of the GPUs SLURM allocated, whatever --gpus-per-node says', async () => {
    // A 4-GPU node while the deployment's --gpus-per-node is 8 (a whole-node job's minimum
    // is lower, a plain job's count equal: the allocation wins either way).
    const { scheduler, worker, lines } = await setup(
      { CUDA_VISIBLE_DEVICES: '0,1,2,3', SLURM_GPUS_ON_NODE: '4' },
      { gpusPerNode: 8, tensorParallelSize: 2 },
    );
    await worker.start();
    expect(registeredGpus(scheduler.calls)).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(worker.instances().map((instance) => processGpus(instance.pid))).toEqual(['0,1', '2,3']);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'info',
        message: 'GPUs 0,1,2,3 (from CUDA_VISIBLE_DEVICES): 2 engine instances',
      }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        message:
          '--gpus-per-node is 8 but SLURM allocated 4 GPUs on this node ' +
          '(CUDA_VISIBLE_DEVICES=0,1,2,3): planning from the 4 allocated',
      }),
    );
  });

  it('starts the instances that fit and names the idle GPUs when TP does not divide them', async () => {
    const { scheduler, worker, lines } = await setup(
      { CUDA_VISIBLE_DEVICES: '0,1,2,3,4,5,6,7', SLURM_GPUS_ON_NODE: '8' },
      { gpusPerNode: 8, tensorParallelSize: 3 },
    );
    await worker.start();
    expect(registeredGpus(scheduler.calls)).toEqual([
      [0, 1, 2],
      [3, 4, 5],
    ]);
    expect(worker.instances().map((instance) => processGpus(instance.pid))).toEqual([
      '0,1,2',
      '3,4,5',
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'info',
        message:
          'GPUs 0,1,2,3,4,5,6,7 (from CUDA_VISIBLE_DEVICES): 2 engine instances, GPUs 6,7 idle',
      }),
    );
    const idle = lines.find(
      (line) => line.level === 'warn' && line.message.startsWith('GPUs 6,7 idle'),
    );
    expect(idle?.message).toBe(
      'GPUs 6,7 idle: 8 GPUs (from CUDA_VISIBLE_DEVICES) do not divide into slices of tensor ' +
        'parallel size 3; 2 instances use GPUs 0-5. Use every GPU with a tensor parallel size ' +
        'that divides 8 (1, 2, 4, 8), or nodes with a multiple of 3 GPUs',
    );
    expect(idle?.fields).toEqual({ idle: [6, 7] });
  });

  it('counts SLURM_GPUS_ON_NODE when CUDA_VISIBLE_DEVICES is not set', async () => {
    const { scheduler, worker } = await setup(
      { SLURM_GPUS_ON_NODE: '2' },
      { gpusPerNode: 1, tensorParallelSize: 1 },
    );
    await worker.start();
    expect(registeredGpus(scheduler.calls)).toEqual([[0], [1]]);
    expect(worker.instances().map((instance) => processGpus(instance.pid))).toEqual(['0', '1']);
  });

  it('refuses a job too small for one slice, naming the flag, the GPUs and the fix', async () => {
    const { scheduler, worker } = await setup(
      { CUDA_VISIBLE_DEVICES: '0,1', SLURM_GPUS_ON_NODE: '2' },
      { gpusPerNode: 8, tensorParallelSize: 4 },
    );
    const error = await worker.start().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WorkerError);
    expect(error).toMatchObject({
      code: 'invalid_option',
      param: 'tensor-parallel-size',
      message:
        'tensor parallel size 4 needs 4 GPUs but this job has 2 (0,1, from CUDA_VISIBLE_DEVICES): ' +
        'choose a tensor parallel size of at most 2, or ask SLURM for at least 4 GPUs per node',
    });
    expect(scheduler.calls.filter((call) => call.route === 'register')).toEqual([]);
  });
});
