import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classifyProviderError } from '@es/pool';
import type { NodeRequest } from '@es/pool';
import {
  cancelByNamePrefix,
  preempt,
  slurmEnv,
  uniqueJobPrefix,
  waitForJob,
  withStoppedController,
} from '@es/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createSlurmClient, createSlurmProvider, SlurmError } from '../src/index.js';

const prefix = uniqueJobPrefix('slurm');
const env = slurmEnv();

async function waitForFile(path: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const text = await readFile(path, 'utf8');
      if (text.endsWith('\n')) return text;
    } catch {
      // not written yet
    }
    if (Date.now() > deadline) throw new Error(`${path} was not written within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

afterAll(async () => {
  await cancelByNamePrefix(prefix);
});

describe('@es/slurm against the dev cluster', () => {
  it('submits a job that runs with 8 GPUs, survives preemption by requeue with the same id, is released from its begin time, and cancels', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-int-'));
    const provider = createSlurmProvider({ env });
    const nasty = `a $HOME \`id\` "dq" 'sq' \\ end`;
    const request: NodeRequest = {
      deployment: 'd',
      name: `${prefix}worker`,
      tag: `${prefix}tag-1`,
      gpusPerNode: 8,
      timeLimitMinutes: 10,
      // The step records what it sees, once per run (SLURM_RESTART_COUNT is unset on the first).
      command: [
        'bash',
        '-c',
        'printf "%s\\n" "$CUDA_VISIBLE_DEVICES" "$ES_NASTY" "$1" > "$2/run-${SLURM_RESTART_COUNT:-0}.txt"; exec sleep 600',
        'worker',
        'model dir/$x `y`',
        logDir,
      ],
      env: { ES_NASTY: nasty },
      logDir,
      cluster: { partition: 'low' },
    };
    const id = await provider.submit(request);
    expect(id).toMatch(/^\d+$/);

    // Generous: other suites' jobs may hold every node for a while.
    const first = await waitForFile(join(logDir, 'run-0.txt'), 90_000);
    expect(first.split('\n').slice(0, 3)).toEqual(['0,1,2,3,4,5,6,7', nasty, 'model dir/$x `y`']);

    const [listed] = (await provider.list({ names: [request.name] })).filter(
      (j) => j.tag === request.tag,
    );
    expect(listed).toMatchObject({
      id,
      name: request.name,
      tag: request.tag,
      state: 'RUNNING',
      restartCount: 0,
    });
    expect(listed?.nodes).toMatch(/^gpu[1-4]$/);
    expect(listed?.timeLeftSeconds).toBeGreaterThan(500);
    expect(listed?.startTime).toBeGreaterThan(Date.now() - 120_000);

    await preempt(listed?.nodes ?? '', 3, `${prefix}preempt`);
    await waitForJob(id, (j) => j.JobState === 'PENDING', 30_000);
    const [requeued] = await provider.list({ names: [request.name] });
    expect(requeued).toMatchObject({
      id,
      state: 'PENDING',
      reason: 'BeginTime',
      restartCount: 1,
      nodes: '',
    });
    // SLURM's requeue begin time: cred_expire (120 s) + 1 s after the requeue.
    expect(requeued?.expectedStart).toBeGreaterThan(Date.now() + 60_000);

    // Released, it starts as soon as a node is free instead of two minutes later.
    const releasedAt = Date.now();
    if (provider.release === undefined) throw new Error('the SLURM provider has no release');
    await provider.release([id]);
    const second = await waitForFile(join(logDir, 'run-1.txt'), 60_000);
    console.log(`requeued job running again ${Date.now() - releasedAt} ms after its release`);
    expect(second.split('\n')[0]).toBe('0,1,2,3,4,5,6,7');
    const [again] = await provider.list({ names: [request.name] });
    expect(again).toMatchObject({ id, state: 'RUNNING', restartCount: 1 });

    await provider.cancel([id]);
    await waitForJob(id, (j) => j.JobState === 'CANCELLED', 30_000);
    const [cancelled] = await provider.list({ names: [request.name] });
    expect(cancelled).toMatchObject({ id, state: 'CANCELLED' });
    // Cancelling an ended job again is not an error.
    await provider.cancel([id]);
  });

  it('pre-flight: a job whose Node is not on its node ends at once, saying so in its .out', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-int-'));
    const client = createSlurmClient({ env });
    const name = `${prefix}preflight`;
    // The scheduler's worker command as a login node with a private Node would write it.
    const node = join(logDir, 'private', 'bin', 'node');
    const id = await client.submit({
      name,
      logDir,
      partition: 'low',
      command: [node, join(logDir, 'apps', 'worker', 'dist', 'cli.mjs'), '--model', 'm'],
    });
    const out = await waitForFile(join(logDir, `${name}-${id}.out`), 90_000);
    expect(out).toMatch(
      new RegExp(
        `^es: node not found \\(or not executable\\) at ${node} on gpu[1-4]: Node and the Elastic Serving checkout \\(built\\) must be on a file system shared with the login node, at the same path on every node\n$`,
      ),
    );
    expect(await readFile(join(logDir, `${name}-${id}.err`), 'utf8')).toBe(out);
    await waitForJob(id, (j) => j.JobState === 'FAILED', 30_000);
  });

  it('gets a name and a comment with quotes, backslashes, # and $ through sbatch unchanged', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-int-'));
    const client = createSlurmClient({ env });
    const name = `${prefix}odd "q" \\b #h $x \`y\``;
    const comment = `tag with spaces, "quotes" #hash $HOME`;
    const id = await client.submit({ name, comment, logDir, command: ['true'] });
    const jobs = await client.list({ names: [name] });
    expect(jobs).toEqual([expect.objectContaining({ id, name, comment })]);
  });

  it('rejects a non-existent partition as a permanent, unambiguous error', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-int-'));
    const client = createSlurmClient({ env });
    const error = await client
      .submit({ name: `${prefix}bad`, partition: 'no-such-partition', logDir, command: ['true'] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(SlurmError);
    expect(error).toMatchObject({
      code: 'slurm_invalid_partition',
      kind: 'permanent',
      ambiguous: false,
      exitCode: 1,
    });
    expect((error as SlurmError).stderr).toMatch(/invalid partition/i);
    expect(classifyProviderError(error)).toMatchObject({ kind: 'permanent', ambiguous: false });
  });

  it('reports a hung controller as a transient error within the call timeout', async () => {
    const client = createSlurmClient({ env, timeouts: { squeueMs: 2_000, sbatchMs: 2_000 } });
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-int-'));
    await withStoppedController(async () => {
      const started = Date.now();
      const error = await client.list().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(Date.now() - started).toBeLessThan(2_000 + 3_000);
      expect(error).toMatchObject({ code: 'slurm_timeout', kind: 'transient', ambiguous: false });

      // A submit that times out may still reach the controller: it is ambiguous.
      const submitError = await client
        .submit({ name: `${prefix}hung`, logDir, command: ['sleep', '1'] })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(submitError).toMatchObject({
        code: 'slurm_timeout',
        kind: 'transient',
        ambiguous: true,
      });
      expect(classifyProviderError(submitError)).toMatchObject({
        kind: 'transient',
        ambiguous: true,
      });
    });
    // The controller answers again afterwards.
    await expect(client.list({ names: [`${prefix}none`] })).resolves.toEqual([]);
  });
});
