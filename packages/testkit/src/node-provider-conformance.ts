/**
 * One conformance suite for every `NodeProvider` driver, as unstorage runs `testDriver`
 * against each of its drivers: the contract as the pool's reconciler relies on it (one
 * list per tick filtered by job name, the `--comment` tag to find a submission again,
 * SLURM's states including ended jobs, cancels that are idempotent, the command and
 * environment reaching the job, classified errors). Imported from `@es/testkit/node-provider`
 * so that `@es/testkit`'s main entry, which scripts load outside vitest, never loads vitest.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isProviderError } from '@es/pool';
import type { ClusterOptions, JobState, NodeProvider, NodeRequest, ObservedJob } from '@es/pool';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { until } from './until.js';

/** How a driver preempts a running job, and what follows (see {@link NodeProviderConformanceOptions}). */
export interface ConformancePreemption<P extends NodeProvider = NodeProvider> {
  /** Preempt `job` (RUNNING, with its `nodes`) as the cluster would. */
  run(provider: P, job: ObservedJob, namePrefix: string): Promise<void>;
  /**
   * True when the driver requeues a preempted job (SLURM with `--requeue`): same id, restart
   * count + 1. False when it ends it `PREEMPTED` (the local provider).
   */
  requeues: boolean;
}

/** Options of {@link describeNodeProvider}. */
export interface NodeProviderConformanceOptions<P extends NodeProvider = NodeProvider> {
  /** GPUs of the driver's largest node: requests ask for all of them, and one more is refused. */
  gpusPerNode: number;
  /** How many such jobs can run at once (nodes): the suite submits one more to see one PENDING. */
  capacity: number;
  /** Cluster options of every request (e.g. `{ partition: 'low' }`). */
  cluster?: ClusterOptions;
  /** Job names start with this (default `es-conf-<random>-`, unique per run). */
  namePrefix?: string;
  /** Longest wait for a job to start or end, in ms (default 60 000). */
  timeoutMs?: number;
  /** A job id no job has (default `'99999999'`): cancelling it is not an error. */
  unknownJobId?: string;
  /**
   * Time between a cancel's SIGTERM and its SIGKILL (SLURM's KillWait, the local provider's
   * `killGraceMs`). When given, a job that ignores SIGTERM is checked to stay COMPLETING at
   * least this long, then end CANCELLED with its processes gone.
   */
  killGraceMs?: number;
  /** Checks preemption when given. */
  preempt?: ConformancePreemption<P>;
  /** After each test, once the suite has cancelled its jobs: close the provider, clean up. */
  cleanup?: (provider: P, namePrefix: string) => Promise<void>;
}

const LIVE_BEFORE_END: readonly JobState[] = ['PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING'];
const NASTY = `a $HOME \`id\` "dq" 'sq' \\ end`;
const SLEEPER = ['sleep', '600'];

/** Whether process `pid` exists (the dev cluster's slurmd runs jobs on this machine too). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Register a `describe` block checking that `factory()`'s provider keeps the `NodeProvider`
 * contract of `@es/pool` as the reconciler relies on it. Every test gets a fresh provider
 * and its own job names, and cancels what it submitted.
 * @example
 * describeNodeProvider('local', () => createLocalProvider({ nodes: 2, gpusPerNode: 8 }), {
 *   gpusPerNode: 8,
 *   capacity: 2,
 *   cleanup: (provider) => provider.close({ kill: true }),
 * });
 */
export function describeNodeProvider<P extends NodeProvider>(
  name: string,
  factory: () => P | Promise<P>,
  options: NodeProviderConformanceOptions<P>,
): void {
  const prefix = options.namePrefix ?? `es-conf-${Math.random().toString(36).slice(2, 10)}-`;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const dirs: string[] = [];
  let current: { provider: P; names: string[] } | undefined;
  let seq = 0;

  async function setUp(): Promise<{ provider: P; jobName: string; logDir: string }> {
    const provider = await factory();
    const jobName = `${prefix}${++seq}`;
    current = { provider, names: [jobName] };
    const logDir = await mkdtemp(join(tmpdir(), 'es-conformance-'));
    dirs.push(logDir);
    return { provider, jobName, logDir };
  }

  function request(jobName: string, logDir: string, extra: Partial<NodeRequest> = {}): NodeRequest {
    return {
      deployment: 'conformance',
      name: jobName,
      tag: `${jobName}:${Math.random().toString(36).slice(2)}`,
      gpusPerNode: options.gpusPerNode,
      command: SLEEPER,
      env: {},
      logDir,
      ...(options.cluster ? { cluster: options.cluster } : {}),
      ...extra,
    };
  }

  async function listed(provider: P, jobName: string, id: string) {
    return (await provider.list({ names: [jobName] })).find((job) => job.id === id);
  }

  /** Polls until `id` is in one of `states`; every state seen on the way must be in `via`. */
  async function reach(
    provider: P,
    jobName: string,
    id: string,
    states: readonly JobState[],
    via: readonly JobState[] = LIVE_BEFORE_END,
    seen: JobState[] = [],
  ): Promise<ObservedJob> {
    try {
      return await until(async () => {
        const job = await listed(provider, jobName, id);
        if (job === undefined) return undefined;
        if (seen.at(-1) !== job.state) seen.push(job.state);
        if (states.includes(job.state)) return job;
        expect(via, `job ${id} went through ${seen.join(' → ')}`).toContain(job.state);
        return undefined;
      }, timeoutMs);
    } catch (error) {
      throw new Error(`job ${id} did not reach ${states.join('/')}; seen: ${seen.join(' → ')}`, {
        cause: error,
      });
    }
  }

  afterEach(async () => {
    const done = current;
    current = undefined;
    if (done === undefined) return;
    const jobs = await done.provider.list({ names: done.names });
    const live = jobs.filter((job) => LIVE_BEFORE_END.includes(job.state)).map((job) => job.id);
    if (live.length > 0) await done.provider.cancel(live);
    await options.cleanup?.(done.provider, prefix);
  });

  afterAll(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  describe(`NodeProvider conformance: ${name}`, () => {
    it('lists a submitted job under its name with its tag, never under another name, with its time left', async () => {
      const { provider, jobName, logDir } = await setUp();
      const before = Date.now();
      const req = request(jobName, logDir, { timeLimitMinutes: 10 });
      const id = await provider.submit(req);
      expect(id).toMatch(/^\d+$/);

      const first = await listed(provider, jobName, id);
      expect(first).toMatchObject({ id, name: jobName, tag: req.tag, restartCount: 0 });
      expect(LIVE_BEFORE_END).toContain(first?.state);
      // Submit times have a resolution of a second on SLURM.
      expect(first?.submitTime).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000);
      expect(first?.submitTime).toBeLessThanOrEqual(Date.now() + 1000);
      expect(await provider.list({ names: [`${jobName}-other`] })).toEqual([]);
      expect(await provider.list({ names: [] })).toEqual([]);

      const running = await reach(provider, jobName, id, ['RUNNING']);
      expect(running.nodes).not.toBe('');
      expect(running.startTime).toBeGreaterThanOrEqual((first?.submitTime ?? 0) - 1000);
      expect(running.tag).toBe(req.tag);
      // The reconciler retires a node ahead of its time limit from this figure.
      expect(running.timeLeftSeconds).toBeGreaterThan(480);
      expect(running.timeLeftSeconds).toBeLessThanOrEqual(600);
    });

    it('runs the command as given, with the request env and SLURM variables, output in <logDir>/<name>-<id>.out', async () => {
      const { provider, jobName, logDir } = await setUp();
      const script =
        'printf "%s\\n" "$SLURM_JOB_ID" "$SLURM_JOB_NAME" "${SLURM_RESTART_COUNT:-0}" ' +
        '"$SLURMD_NODENAME" "$CUDA_VISIBLE_DEVICES" "$ES_CONFORMANCE" "$1" > "$2/env.tmp" && ' +
        'mv "$2/env.tmp" "$2/env.txt" && echo "to stdout"';
      const id = await provider.submit(
        request(jobName, logDir, {
          command: ['sh', '-c', script, 'job', NASTY, logDir],
          env: { ES_CONFORMANCE: NASTY },
        }),
      );
      const ended = await reach(provider, jobName, id, ['COMPLETED']);
      expect(ended).toMatchObject({ id, name: jobName, reason: '', restartCount: 0 });
      const [jobId, jobNameSeen, restart, node, gpus, env, arg] = (
        await readFile(join(logDir, 'env.txt'), 'utf8')
      ).split('\n');
      expect({ jobId, jobNameSeen, restart, node, env, arg }).toEqual({
        jobId: id,
        jobNameSeen: jobName,
        restart: '0',
        node: ended.nodes,
        env: NASTY,
        arg: NASTY,
      });
      expect(gpus?.split(',')).toHaveLength(options.gpusPerNode);
      const out = await until(async () => {
        const text = await readFile(join(logDir, `${jobName}-${id}.out`), 'utf8').catch(() => '');
        return text.includes('to stdout') ? text : undefined;
      }, timeoutMs);
      expect(out).toContain('to stdout');
    });

    it('ends a job whose command fails as FAILED (NonZeroExitCode), still listed after its end', async () => {
      const { provider, jobName, logDir } = await setUp();
      const id = await provider.submit(
        request(jobName, logDir, { command: ['sh', '-c', 'exit 3'] }),
      );
      const failed = await reach(provider, jobName, id, ['FAILED']);
      expect(failed.reason).toMatch(/^NonZeroExitCode/);
      expect(failed.nodes).not.toBe('');
      expect((await listed(provider, jobName, id))?.state).toBe('FAILED');
    });

    it('cancels a running job (CANCELLED); cancelling it again, an unknown id or nothing is not an error', async () => {
      const { provider, jobName, logDir } = await setUp();
      const id = await provider.submit(request(jobName, logDir));
      await reach(provider, jobName, id, ['RUNNING']);
      await provider.cancel([id]);
      const cancelled = await reach(
        provider,
        jobName,
        id,
        ['CANCELLED'],
        ['RUNNING', 'COMPLETING'],
      );
      expect(cancelled.nodes).not.toBe('');
      await expect(provider.cancel([id])).resolves.toBeUndefined();
      await expect(
        provider.cancel([id, options.unknownJobId ?? '99999999']),
      ).resolves.toBeUndefined();
      await expect(provider.cancel([])).resolves.toBeUndefined();
      expect((await listed(provider, jobName, id))?.state).toBe('CANCELLED');
    });

    it.runIf(options.killGraceMs !== undefined)(
      'cancels a job that ignores SIGTERM: COMPLETING for the kill grace, then CANCELLED with its processes gone',
      async () => {
        const { provider, jobName, logDir } = await setUp();
        const pidFile = join(logDir, 'pid');
        const script =
          'trap "" TERM; echo $$ > "$1.tmp" && mv "$1.tmp" "$1"; while :; do sleep 1; done';
        const id = await provider.submit(
          request(jobName, logDir, { command: ['sh', '-c', script, 'job', pidFile] }),
        );
        await reach(provider, jobName, id, ['RUNNING']);
        const pid = Number(
          await until(
            async () => (await readFile(pidFile, 'utf8').catch(() => '')).trim() || undefined,
            timeoutMs,
          ),
        );
        expect(alive(pid)).toBe(true);
        const cancelledAt = Date.now();
        await provider.cancel([id]);
        const seen: JobState[] = [];
        await reach(provider, jobName, id, ['CANCELLED'], ['RUNNING', 'COMPLETING'], seen);
        expect(Date.now() - cancelledAt).toBeGreaterThanOrEqual((options.killGraceMs ?? 0) - 250);
        expect(seen.filter((state) => state !== 'RUNNING')).toEqual(['COMPLETING', 'CANCELLED']);
        await until(async () => (alive(pid) ? undefined : true), timeoutMs);
      },
    );

    it('keeps a job beyond capacity PENDING and cancels it there without it ever running', async () => {
      const { provider, jobName, logDir } = await setUp();
      const ids: string[] = [];
      for (let i = 0; i <= options.capacity; i++) {
        ids.push(await provider.submit(request(jobName, logDir)));
      }
      // Settled: some run, some wait, and the running ones stay the same over two looks.
      let last = '';
      const jobs = await until(async () => {
        const now = await provider.list({ names: [jobName] });
        const running = now.filter((j) => j.state === 'RUNNING').map((j) => j.id);
        const key = running.join(',');
        const settled = key !== '' && key === last && now.some((j) => j.state === 'PENDING');
        last = key;
        if (!settled) await sleep(500);
        return settled ? now : undefined;
      }, timeoutMs);
      expect(jobs.map((j) => j.id).sort()).toEqual([...ids].sort());
      const pending = jobs.find((j) => j.state === 'PENDING') as ObservedJob;
      expect(pending).toMatchObject({ nodes: '', restartCount: 0 });
      expect(pending.startTime).toBeUndefined();
      expect(pending.reason).not.toBe('');
      const running = jobs.filter((j) => j.state === 'RUNNING').map((j) => j.id);

      await provider.cancel([pending.id]);
      const cancelled = await reach(provider, jobName, pending.id, ['CANCELLED'], ['PENDING']);
      expect(cancelled.nodes).toBe('');
      const after = await provider.list({ names: [jobName] });
      for (const id of running) {
        expect(after.find((j) => j.id === id)?.state, `job ${id}`).toBe('RUNNING');
      }
      await expect(provider.cancel([pending.id])).resolves.toBeUndefined();
    });

    it('refuses a job it can never run with a permanent, unambiguous ProviderError', async () => {
      const { provider, jobName, logDir } = await setUp();
      const tooBig = await provider
        .submit(request(jobName, logDir, { gpusPerNode: options.gpusPerNode + 1 }))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(isProviderError(tooBig), String(tooBig)).toBe(true);
      expect(tooBig).toMatchObject({ kind: 'permanent', ambiguous: false });
      expect(tooBig).toHaveProperty('code', expect.any(String));
      const empty = await provider.submit(request(jobName, logDir, { command: [] })).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(isProviderError(empty), String(empty)).toBe(true);
      expect(empty).toMatchObject({ kind: 'permanent', ambiguous: false });
      // Nothing refused may run or count as live. SLURM may keep a record of the refused job
      // (FAILED, reason BadConstraints); the local provider keeps none.
      for (const job of await provider.list({ names: [jobName] })) {
        expect(LIVE_BEFORE_END, `job ${job.id} (${job.reason})`).not.toContain(job.state);
        expect(job.nodes).toBe('');
      }
    });

    const preemption = options.preempt;
    it.runIf(preemption !== undefined)(
      preemption?.requeues === false
        ? 'ends a preempted job PREEMPTED (no requeue)'
        : 'requeues a preempted job under the same id with restart count 1',
      async () => {
        const { provider, jobName, logDir } = await setUp();
        const id = await provider.submit(request(jobName, logDir));
        const running = await reach(provider, jobName, id, ['RUNNING']);
        await (preemption as ConformancePreemption<P>).run(provider, running, prefix);
        if (preemption?.requeues) {
          const requeued = await until(async () => {
            const job = await listed(provider, jobName, id);
            return job !== undefined && job.restartCount > 0 ? job : undefined;
          }, timeoutMs);
          expect(requeued).toMatchObject({ id, name: jobName, restartCount: 1 });
          expect(requeued.state).not.toMatch(/^(CANCELLED|COMPLETED|FAILED|PREEMPTED)$/);
        } else {
          const ended = await reach(
            provider,
            jobName,
            id,
            ['PREEMPTED'],
            ['RUNNING', 'COMPLETING'],
          );
          expect(ended).toMatchObject({ id, restartCount: 0 });
        }
      },
    );
  });
}
