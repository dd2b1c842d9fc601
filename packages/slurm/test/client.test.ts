import { chmod, mkdir, mkdtemp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classifyProviderError } from '@es/pool';
import type { NodeRequest } from '@es/pool';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createSlurmClient,
  createSlurmProvider,
  nodeRequestToJobSpec,
  SlurmError,
} from '../src/index.js';
import type { SlurmClientOptions } from '../src/index.js';

// Fake sbatch/squeue/scancel/scontrol on PATH: each records its argv (NUL-separated, one file per
// call) and answers with FAKE_<CMD>_{STDOUT,STDERR,EXIT,SLEEP} from its environment.
let bin: string;
let calls: string;
const fixture = () => readFile(join(import.meta.dirname, 'fixtures', 'squeue-mixed.txt'), 'utf8');

beforeAll(async () => {
  const root = await mkdtemp(join(tmpdir(), 'es-slurm-fake-'));
  bin = join(root, 'bin');
  calls = join(root, 'calls');
  await mkdir(bin);
  for (const cmd of ['sbatch', 'squeue', 'scancel', 'scontrol']) {
    const up = cmd.toUpperCase();
    await writeFile(
      join(bin, cmd),
      `#!/bin/bash
mkdir -p "$FAKE_CALLS"
f="$FAKE_CALLS/$(date +%s%N)-${cmd}"
printf '%s\\0' "$@" > "$f"
if [ "${cmd}" = sbatch ]; then cp "\${@: -1}" "$f.script"; stat -c %a "\${@: -1}" > "$f.mode"; fi
if [ -n "$FAKE_${up}_SLEEP" ]; then sleep "$FAKE_${up}_SLEEP"; fi
printf '%b' "$FAKE_${up}_STDOUT"
printf '%b' "$FAKE_${up}_STDERR" >&2
exit "\${FAKE_${up}_EXIT:-0}"
`,
    );
    await chmod(join(bin, cmd), 0o755);
  }
});

function client(fake: Record<string, string>, options: SlurmClientOptions = {}) {
  return createSlurmClient({
    ...options,
    env: { PATH: `${bin}:${process.env.PATH ?? ''}`, FAKE_CALLS: calls, ...fake },
  });
}

async function lastCall(cmd: string): Promise<{ argv: string[]; script?: string; mode?: string }> {
  const files = (await readdir(calls)).filter((f) => f.endsWith(`-${cmd}`)).sort();
  const file = join(calls, files.at(-1) ?? 'none');
  const argv = (await readFile(file, 'utf8')).split('\0').slice(0, -1);
  if (cmd !== 'sbatch') return { argv };
  return {
    argv,
    script: await readFile(`${file}.script`, 'utf8'),
    mode: (await readFile(`${file}.mode`, 'utf8')).trim(),
  };
}

async function failure(promise: Promise<unknown>): Promise<SlurmError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SlurmError);
  return error as SlurmError;
}

describe('createSlurmClient with fake SLURM commands', () => {
  it('submits the rendered script from a 0600 file in the log dir and returns the job id', async () => {
    const logDir = join(await mkdtemp(join(tmpdir(), 'es-slurm-logs-')), 'nested');
    const id = await client({ FAKE_SBATCH_STDOUT: '4242;cluster\\n' }).submit({
      name: 'es-x',
      comment: 'tag-1',
      logDir,
      command: ['worker', 'a b'],
    });
    expect(id).toBe('4242');
    const call = await lastCall('sbatch');
    expect(call.argv[0]).toBe('--parsable');
    expect(call.argv[1]?.startsWith(`${logDir}/es-x-`)).toBe(true);
    expect(call.argv[1]).toMatch(/\.sbatch$/);
    expect(call.mode).toBe('600');
    expect((await stat(call.argv[1] ?? '')).mode & 0o777).toBe(0o600);
    // The directory it made is owner-only: nobody else can swap the script before sbatch reads it.
    expect((await stat(logDir)).mode & 0o777).toBe(0o700);
    expect(call.script).toContain('#SBATCH --comment="tag-1"');
    expect(call.script).toContain("exec srun --ntasks=1 -- worker 'a b'");
  });

  it('classifies a failed sbatch from its stderr and keeps command, exit code and stderr', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-logs-'));
    const stderr =
      "sbatch: error: QOSMaxSubmitJobPerUserLimit\\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\\n";
    const error = await failure(
      client({ FAKE_SBATCH_EXIT: '1', FAKE_SBATCH_STDERR: stderr }).submit({
        name: 'n',
        logDir,
        command: ['x'],
      }),
    );
    expect(error).toMatchObject({
      code: 'slurm_policy_limit',
      kind: 'policy',
      ambiguous: false,
      exitCode: 1,
    });
    expect(error.command[0]).toBe('sbatch');
    expect(error.stderr).toContain('QOSMaxSubmitJobPerUserLimit');
    expect(error.message).toContain('Job violates accounting/QOS policy');
  });

  it('marks a socket timeout inside sbatch as ambiguous', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-logs-'));
    const error = await failure(
      client({
        FAKE_SBATCH_EXIT: '1',
        FAKE_SBATCH_STDERR:
          'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\\n',
      }).submit({ name: 'n', logDir, command: ['x'] }),
    );
    expect(error).toMatchObject({
      code: 'slurm_socket_timeout',
      kind: 'transient',
      ambiguous: true,
    });
  });

  it('kills an sbatch that outlives its timeout and reports an ambiguous transient error', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-logs-'));
    const started = Date.now();
    const error = await failure(
      client({ FAKE_SBATCH_SLEEP: '30' }, { timeouts: { sbatchMs: 300 } }).submit({
        name: 'n',
        logDir,
        command: ['x'],
      }),
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toMatchObject({ code: 'slurm_timeout', kind: 'transient', ambiguous: true });
    expect(classifyProviderError(error)).toMatchObject({ kind: 'transient', ambiguous: true });
  });

  it('treats sbatch output without a job id as ambiguous bad output', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-logs-'));
    const error = await failure(
      client({ FAKE_SBATCH_STDOUT: 'Submitted batch job\\n' }).submit({
        name: 'n',
        logDir,
        command: ['x'],
      }),
    );
    expect(error).toMatchObject({ code: 'slurm_bad_output', ambiguous: true });
  });

  it('lists with one squeue call for the user, filtered by name', async () => {
    const jobs = await client({
      FAKE_SQUEUE_STDOUT: (await fixture()).replaceAll('\\', '\\\\'),
    }).list({
      names: ['fx-run', 'fx-pend'],
    });
    expect(jobs.map((j) => `${j.id}:${j.state}:${j.restartCount}`)).toEqual([
      '9:PENDING:1',
      '12:PENDING:0',
      '10:RUNNING:0',
      '11:RUNNING:0',
    ]);
    const { argv } = await lastCall('squeue');
    expect(argv.slice(0, 5)).toEqual(['-h', '-t', 'all', '--me', '--name=fx-run,fx-pend']);
    expect(argv.slice(5, 6)).toEqual(['-O']);
  });

  it('lists another user with -u, and makes no call for an empty name list', async () => {
    const c = client({ FAKE_SQUEUE_STDOUT: '' }, { user: 'svc-es' });
    await c.list();
    expect((await lastCall('squeue')).argv.slice(0, 5)).toEqual([
      '-h',
      '-t',
      'all',
      '-u',
      'svc-es',
    ]);
    const before = (await readdir(calls)).length;
    expect(await c.list({ names: [] })).toEqual([]);
    expect((await readdir(calls)).length).toBe(before);
  });

  it('reports an unreachable controller on squeue as transient and a hung squeue as a timeout', async () => {
    const down = await failure(
      client({
        FAKE_SQUEUE_EXIT: '1',
        FAKE_SQUEUE_STDERR:
          'slurm_load_jobs error: Unable to contact slurm controller (connect failure)\\n',
      }).list(),
    );
    expect(down).toMatchObject({ code: 'slurm_unreachable', kind: 'transient', ambiguous: false });
    const hung = await failure(
      client({ FAKE_SQUEUE_SLEEP: '30' }, { timeouts: { squeueMs: 300 } }).list(),
    );
    expect(hung).toMatchObject({ code: 'slurm_timeout', kind: 'transient', ambiguous: false });
  });

  it('cancels in one scancel call, ignoring jobs that are already gone', async () => {
    await client({}).cancel(['5', '6', '5']);
    expect((await lastCall('scancel')).argv).toEqual(['5', '6']);
    await client({
      FAKE_SCANCEL_EXIT: '1',
      FAKE_SCANCEL_STDERR:
        'scancel: error: Kill job error on job id 7: Invalid job id specified\\n',
    }).cancel(['7']);
    const error = await failure(
      client({
        FAKE_SCANCEL_EXIT: '1',
        FAKE_SCANCEL_STDERR:
          'scancel: error: Kill job error on job id 5: Unable to contact slurm controller (connect failure)\\n',
      }).cancel(['5']),
    );
    expect(error).toMatchObject({ code: 'slurm_unreachable', kind: 'transient' });
  });

  it('refuses something that is not a job id before running scancel', async () => {
    const error = await failure(client({}).cancel(['--user=root']));
    expect(error).toMatchObject({ code: 'slurm_invalid_request', kind: 'permanent' });
  });

  it('releases requeued jobs from their begin time in one scontrol call', async () => {
    await client({}).release(['9', '12', '9']);
    expect((await lastCall('scontrol')).argv).toEqual(['update', 'JobId=9,12', 'StartTime=now']);
    // A job that ended meanwhile has nothing left to release.
    await client({
      FAKE_SCONTROL_EXIT: '1',
      FAKE_SCONTROL_STDERR: 'slurm_update error: Invalid job id specified\\n',
    }).release(['7']);
    const refused = await failure(
      client({
        FAKE_SCONTROL_EXIT: '1',
        FAKE_SCONTROL_STDERR: 'slurm_update error: Access/permission denied\\n',
      }).release(['9']),
    );
    expect(refused.message).toContain(
      'scontrol failed (exit 1): slurm_update error: Access/permission denied',
    );
    expect(refused).toMatchObject({
      command: ['scontrol', 'update', 'JobId=9', 'StartTime=now'],
      stderr: 'slurm_update error: Access/permission denied\n',
    });
    const notAnId = await failure(client({}).release(['9 StartTime=2030-01-01']));
    expect(notAnId).toMatchObject({ code: 'slurm_invalid_request', kind: 'permanent' });
  });

  it('reports a missing SLURM installation as permanent', async () => {
    const error = await failure(
      createSlurmClient({ commands: { squeue: '/nonexistent/squeue' } }).list(),
    );
    expect(error).toMatchObject({ code: 'slurm_command_not_found', kind: 'permanent' });
  });
});

describe('createSlurmProvider', () => {
  it('turns a node request into a requeueable job and observed jobs back into ObservedJob', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'es-slurm-logs-'));
    const provider = createSlurmProvider({
      env: {
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        FAKE_CALLS: calls,
        FAKE_SBATCH_STDOUT: '77\\n',
        FAKE_SQUEUE_STDOUT: (await fixture()).replaceAll('\\', '\\\\'),
      },
    });
    expect(provider.kind).toBe('slurm');
    const request: NodeRequest = {
      deployment: 'llama',
      name: 'es-llama',
      tag: 'es-llama-1a2b',
      gpusPerNode: 8,
      timeLimitMinutes: 60,
      command: ['es-worker', '--model', '/m/Llama 3'],
      env: { HF_HOME: '/h f' },
      logDir,
      cluster: { partition: 'low', qos: 'lowest', setup: ['module load cuda'] },
    };
    expect(await provider.submit(request)).toBe('77');
    const { script } = await lastCall('sbatch');
    expect(script).toContain('#SBATCH --comment="es-llama-1a2b"');
    expect(script).toContain('#SBATCH --gpus-per-node=8');
    expect(script).toContain('#SBATCH --time=60');
    expect(script).toContain('#SBATCH --partition="low"');
    expect(script).toContain('#SBATCH --qos="lowest"');
    expect(script).toContain('#SBATCH --requeue');
    expect(script).toContain("export HF_HOME='/h f'");
    expect(script).toContain('module load cuda\n');
    expect(script).toContain("exec srun --ntasks=1 -- es-worker --model '/m/Llama 3'");

    const observed = await provider.list({ names: ['fx-run'] });
    expect(observed.find((j) => j.id === '9')).toEqual({
      id: '9',
      name: 'fx-run',
      tag: 'fx-1',
      state: 'PENDING',
      reason: 'BeginTime',
      nodes: '',
      restartCount: 1,
      timeLeftSeconds: 5400,
      submitTime: new Date('2026-11-29T03:32:55').getTime(),
      // squeue's start time of a pending job is its expected start (here a requeue's begin time).
      expectedStart: new Date('2026-11-29T03:33:06').getTime(),
    });
    expect(observed.find((j) => j.id === '10')?.startTime).toBe(
      new Date('2026-11-29T03:32:53').getTime(),
    );
  });

  it('keeps an explicit requeue: false and leaves unset options out', () => {
    const spec = nodeRequestToJobSpec({
      deployment: 'd',
      name: 'n',
      tag: 't',
      gpusPerNode: 4,
      command: ['w'],
      env: {},
      logDir: '/l',
      cluster: { requeue: false, exclusive: true },
    });
    expect(spec).toEqual({
      name: 'n',
      comment: 't',
      gpusPerNode: 4,
      requeue: false,
      exclusive: true,
      logDir: '/l',
      env: {},
      command: ['w'],
    });
  });
});
