/**
 * The launchers on the real SLURM dev cluster (4 nodes × 8 fake GPUs on this machine):
 * `launch-scheduler.slurm` runs the built scheduler as a CPU-only, requeueable job that
 * publishes its URL in `<log dir>/scheduler-url` and submits its GPU node job from inside
 * the job; a requeue brings it back with the same URL and re-adopts the node job.
 * `launch-worker.slurm` starts a worker by hand that finds the scheduler (URL file and
 * secret in the log dir), registers one engine per GPU of its allocation and serves `/v1`
 * through the scheduler. `launch-scheduler.sh` starts a local-backend scheduler in the
 * background and leaves its pid, log and URL in the log dir.
 *
 * All traffic stays on 127.0.0.1: the schedulers listen on (or advertise) 127.0.0.1, so the
 * workers bind their engines to loopback.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { afterAll, describe, expect, inject, it, vi } from 'vitest';
import {
  freePort,
  processesWithEnv,
  waitFor,
  type ClusterStatus,
} from '../../apps/scheduler/test/harness.js';
import { deriveKeys } from '../../packages/protocol/src/index.js';
import {
  cancelByNamePrefix,
  processAlive,
  runSlurm,
  showJob,
  uniqueJobPrefix,
  waitForJob,
} from '../../packages/testkit/src/index.js';
import { processesMentioning } from './processes.js';

process.env.SLURM_CONF = inject('slurmConf');

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
const prefix = uniqueJobPrefix('launch');
const dir = mkdtempSync(join(tmpdir(), 'es-launchers-'));
const logDir = join(dir, 'logs');
const urlFile = join(logDir, 'scheduler-url');
// Under the prefix, so the scheduler's own node jobs (es-<sid>-mock-model) are cleaned up too.
const sid = `${prefix.slice('es-'.length)}sched`;
const FAST = '--node-acquire-interval 1 --health-check-interval 1 --heartbeat-timeout 5'.split(' ');
const jobIds: string[] = [];
let schedulerUrl = '';
let localPid: number | undefined;

/** Submit `script` with sbatch from `dir`; resolves to the job id. */
async function submit(
  name: string,
  sbatchFlags: string[],
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const { stdout } = await run(
    'sbatch',
    [
      '--parsable',
      '-J',
      `${prefix}${name}`,
      '-o',
      join(dir, `${name}-%j.out`),
      ...sbatchFlags,
    ].concat([join(root, 'scripts', script), ...args]),
    { cwd: dir, env: { ...process.env, ...env }, timeout: 20_000 },
  );
  const id = stdout.trim().split(';')[0] ?? '';
  expect(id).toMatch(/^\d+$/);
  jobIds.push(id);
  return id;
}

const jobOutput = (name: string, id: string) => {
  const file = join(dir, `${name}-${id}.out`);
  return existsSync(file) ? readFileSync(file, 'utf8') : '(no output yet)';
};

/** The scheduler's admin token (from its secret): `/cluster_status` names jobs only with it. */
const adminHeaders = (): Record<string, string> => {
  const secret = join(logDir, 'secret');
  if (!existsSync(secret)) return {};
  return { authorization: `Bearer ${deriveKeys(readFileSync(secret, 'utf8')).adminToken}` };
};

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, {
    headers: adminHeaders(),
    signal: AbortSignal.timeout(5_000),
  });
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return (await response.json()) as T;
}

async function chat(baseUrl: string): Promise<string> {
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'EMPTY', maxRetries: 0 });
  const completion = await client.chat.completions.create({
    model: 'mock-model',
    messages: [{ role: 'user', content: 'Hello!' }],
    max_tokens: 8,
  });
  return completion.choices[0]?.message.content ?? '';
}

afterAll(async () => {
  await cancelByNamePrefix(prefix);
  if (localPid !== undefined && processAlive(localPid)) process.kill(localPid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('launch-scheduler.slurm and launch-worker.slurm on the dev cluster', () => {
  let schedulerJob = '';
  let nodeJob = '';
  let workerJob = '';
  const workersOf = (status: ClusterStatus, job: string) =>
    status.workers.filter((w) => w.slurm_job_id === job && w.status === 'READY');

  it('runs the scheduler as a CPU-only requeueable job that publishes its URL and acquires a node', async () => {
    // --port 0: every (re)start picks a new port, which its running workers must follow.
    schedulerJob = await submit('scheduler', [], 'launch-scheduler.slurm', [
      ...'--backend slurm --engine mock --model mock-model --max-nodes 1'.split(' '),
      ...['--tensor-parallel-size', '4', '--host', '127.0.0.1', '--port', '0'],
      ...['--worker-base-port', String(await freePort()), '--log-dir', logDir],
      ...['--scheduler-id', sid, ...FAST],
    ]);
    await waitFor(
      urlFile,
      () => (existsSync(urlFile) ? readFileSync(urlFile, 'utf8') : ''),
      (text) => text !== '',
      90_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${jobOutput('scheduler', schedulerJob)}`);
    });
    schedulerUrl = readFileSync(urlFile, 'utf8').trim();
    expect(schedulerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await getJson(`${schedulerUrl}/health`)).toMatchObject({ status: 'ok' });

    const job = await showJob(schedulerJob);
    expect(job).toMatchObject({ JobState: 'RUNNING', Requeue: '1' });
    expect(job?.TRES ?? '').not.toContain('gpu');
    expect(readFileSync(join(logDir, 'scheduler.pid'), 'utf8').trim()).toMatch(/^\d+$/);
    expect(readFileSync(join(logDir, 'scheduler.log'), 'utf8')).toContain('serving /v1 on');
    // The launcher announces the URL the scheduler wrote (it polls the file every 0.2 s).
    await vi.waitFor(
      () => expect(jobOutput('scheduler', schedulerJob)).toContain(`serving at ${schedulerUrl}`),
      { timeout: 5_000, interval: 100 },
    );

    // From inside its job, the scheduler submits a GPU node job (2 instances of TP 4).
    const status = await waitFor(
      "two ready workers of the scheduler's node job",
      () => getJson<ClusterStatus>(`${schedulerUrl}/cluster_status`),
      (s) => s.ready_workers === 2,
      150_000,
    );
    nodeJob = status.workers[0]?.slurm_job_id ?? '';
    expect(nodeJob).not.toBe(schedulerJob);
    expect((await showJob(nodeJob))?.JobName).toBe(`es-${sid}-mock-model`);
  });

  // Long profile (ES_LONG_TESTS=1): it waits out SLURM's 121 s requeue begin time, which
  // nothing lifts for the scheduler's own job; the tests after it use the first start's URL.
  it.skipIf(process.env.ES_LONG_TESTS !== '1')(
    'comes back after a requeue (same job id) on another port; its running workers follow the URL file',
    async () => {
      expect(nodeJob).not.toBe('');
      const before = schedulerUrl;
      const requeue = await runSlurm('scontrol', ['requeue', schedulerJob]);
      expect(requeue.exitCode).toBe(0);
      // SLURM holds a requeued job until a begin time 121 s ahead (cred_expire + 1 s), and
      // nothing of the scheduler runs then to lift it: the job comes back after that.
      await waitForJob(
        schedulerJob,
        (j) => j.JobState === 'RUNNING' && j.Restarts === '1',
        200_000,
      );
      await waitFor(
        'the URL file after the restart',
        () => (existsSync(urlFile) ? readFileSync(urlFile, 'utf8').trim() : ''),
        (text) => text !== '' && text !== before,
        60_000,
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${jobOutput('scheduler', schedulerJob)}`);
      });
      schedulerUrl = readFileSync(urlFile, 'utf8').trim();
      expect(jobOutput('scheduler', schedulerJob)).toContain(`job ${schedulerJob} (restart 1)`);
      // The node job kept running; its workers, started with the old URL, read the file and
      // registered with the new scheduler: nothing resubmitted, nothing left to the start-up
      // timeout.
      const status = await waitFor(
        'the node job re-adopted',
        () => getJson<ClusterStatus>(`${schedulerUrl}/cluster_status`),
        (s) => workersOf(s, nodeJob).length === 2,
        60_000,
      );
      expect(status.workers.map((w) => w.slurm_job_id)).toEqual([nodeJob, nodeJob]);
    },
    300_000,
  );

  it('starts a manual worker that registers one engine per allocated GPU and serves /v1', async () => {
    expect(schedulerUrl).not.toBe('');
    workerJob = await submit(
      'worker',
      ['--gpus-per-node=2'],
      'launch-worker.slurm',
      [
        ...'--engine mock --model mock-model --deployment mock-model --base-port 0'.split(' '),
        ...'--drain-grace 1 --kill-grace 1'.split(' '),
      ],
      // The URL and the secret come from the scheduler's log dir.
      { ES_LOG_DIR: logDir },
    );
    const status = await waitFor(
      'two ready workers of the manual job',
      () => getJson<ClusterStatus>(`${schedulerUrl}/cluster_status`),
      (s) => workersOf(s, workerJob).length === 2,
      150_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${jobOutput('worker', workerJob)}`);
    });
    const manual = workersOf(status, workerJob);
    expect(manual.map((w) => w.gpus).sort()).toEqual([[0], [1]]);
    expect(manual.every((w) => w.base_url.startsWith('http://127.0.0.1:'))).toBe(true);
    expect(status.ready_workers).toBe(4);
    for (let i = 0; i < 4; i += 1) expect(await chat(schedulerUrl)).not.toBe('');
    // Counted from the data plane's reports (one a second).
    const total = (s: ClusterStatus) => s.workers.reduce((n, w) => n + w.requests_served, 0);
    const served = await waitFor(
      'the 4 chats counted',
      () => getJson<ClusterStatus>(`${schedulerUrl}/cluster_status`),
      (s) => total(s) >= 4,
      10_000,
    );
    expect(total(served)).toBe(4);
  });

  it('scancel ends the manual worker and the scheduler; the node job stays for the next start', async () => {
    expect(workerJob).not.toBe('');
    await runSlurm('scancel', [workerJob]);
    await waitFor(
      'the scheduler to see the manual workers leave',
      () => getJson<ClusterStatus>(`${schedulerUrl}/cluster_status`),
      (s) => workersOf(s, workerJob).length === 0 && s.ready_workers === 2,
      30_000,
    );
    await runSlurm('scancel', [schedulerJob]);
    for (const id of [workerJob, schedulerJob]) {
      await waitForJob(id, (j) => j.JobState !== 'RUNNING' && j.JobState !== 'COMPLETING', 60_000);
      await waitFor(
        `no process of job ${id}`,
        () => processesWithEnv('SLURM_JOB_ID', id),
        (left) => left.length === 0,
        30_000,
      );
    }
    await expect(fetch(`${schedulerUrl}/health`)).rejects.toThrow();
    expect(await showJob(nodeJob)).toMatchObject({ JobState: 'RUNNING' });
    expect(await cancelByNamePrefix(prefix)).toEqual([nodeJob]);
    await waitFor(
      `no process of node job ${nodeJob}`,
      () => processesWithEnv('SLURM_JOB_ID', nodeJob),
      (left) => left.length === 0,
      60_000,
    );
  });
});

describe('launch-scheduler.sh', () => {
  const localLogDir = join(dir, 'local-logs');

  it('starts a local-backend scheduler in the background and leaves pid, log and URL in the log dir', async () => {
    const { stdout } = await run(
      join(root, 'scripts/launch-scheduler.sh'),
      [
        ...'--backend local --engine mock --model mock-model --max-nodes 1 --port 0'.split(' '),
        ...['--tensor-parallel-size', '8', '--log-dir', localLogDir, '--scheduler-id', `${sid}l`],
        // Every address: the URL file names ES_SCHEDULER_HOST instead of 0.0.0.0.
        ...['--host', '0.0.0.0'],
      ],
      { cwd: dir, timeout: 60_000, env: { ...process.env, ES_SCHEDULER_HOST: '127.0.0.1' } },
    );
    localPid = Number(readFileSync(join(localLogDir, 'scheduler.pid'), 'utf8'));
    expect(processAlive(localPid)).toBe(true);
    const url = readFileSync(join(localLogDir, 'scheduler-url'), 'utf8').trim();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(stdout).toContain(`scheduler ${url} (pid ${localPid}`);

    await waitFor(
      'a ready local worker',
      () => getJson<{ ready_workers: number }>(`${url}/health`),
      (h) => h.ready_workers === 1,
      30_000,
    );
    expect(await chat(url)).not.toBe('');

    // A second start with the same log dir is refused while the first runs.
    const again = await run(
      join(root, 'scripts/launch-scheduler.sh'),
      ['--backend', 'local', '--model', 'mock-model', '--log-dir', localLogDir],
      { cwd: dir, timeout: 30_000 },
    ).catch((error: { code: number; stderr: string }) => error);
    expect(again).toMatchObject({ code: 1 });
    expect((again as { stderr: string }).stderr).toContain(`already runs`);

    process.kill(localPid, 'SIGTERM');
    await waitFor(
      'the scheduler to exit',
      () => processAlive(localPid ?? 0),
      (a) => !a,
      20_000,
    );
    const log = readFileSync(join(localLogDir, 'scheduler.log'), 'utf8');
    expect(log).toContain('SIGTERM: stopping and ending the local jobs');
    await waitFor(
      'no worker or engine of the local scheduler',
      () => processesMentioning(localLogDir),
      (left) => left.length === 0,
      15_000,
    );
  });
});
