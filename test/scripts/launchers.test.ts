/**
 * What the launchers do before SLURM is involved, run as a user would, with a stand-in
 * `srun` on PATH that prints the command it was given: which scheduler URL, secret and
 * log dir `launch-worker.slurm` hands the worker, and the messages for a missing URL or
 * secret; `launch-scheduler.sh` reports a scheduler that exits before serving.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'es-launchers-unit-'));
const bin = join(dir, 'bin');
mkdirSync(bin);
writeFileSync(join(bin, 'srun'), '#!/bin/sh\nprintf "%s\\n" srun "$@"\n');
chmodSync(join(bin, 'srun'), 0o755);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function launch(script: string, args: string[], env: Record<string, string>) {
  try {
    const { stdout, stderr } = await run('bash', [join(root, 'scripts', script), ...args], {
      cwd: dir,
      env: { PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: dir, ...env },
      timeout: 30_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    return error as Result;
  }
}

/** A log dir as the scheduler leaves it: URL file and secret. */
function schedulerLogDir(name: string, url?: string): string {
  const logDir = join(dir, name);
  mkdirSync(logDir);
  // The workers' file: the URL of the scheduler's worker listener.
  if (url) writeFileSync(join(logDir, 'worker-url'), `${url}\n`);
  writeFileSync(join(logDir, 'secret'), 'secret', { mode: 0o600 });
  return logDir;
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('launch-worker.slurm', () => {
  const worker = join(root, 'apps/worker/dist/cli.mjs');

  it('runs es-worker as a job step with the URL and secret from the log dir', async () => {
    const logDir = schedulerLogDir('found', 'http://login1:8780');
    const result = await launch('launch-worker.slurm', ['--model', 'm', '--deployment', 'd'], {
      ES_LOG_DIR: logDir,
      CUDA_VISIBLE_DEVICES: '0,1',
    });
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split('\n')).toEqual([
      'srun',
      '--ntasks=1',
      '--',
      'node',
      worker,
      '--scheduler-url',
      'http://login1:8780',
      '--scheduler-url-file',
      join(logDir, 'worker-url'),
      '--secret-file',
      join(logDir, 'secret'),
      '--log-dir',
      logDir,
      '--model',
      'm',
      '--deployment',
      'd',
    ]);
    expect(result.stderr).toContain('GPUs 0,1, scheduler http://login1:8780');
  });

  it('keeps the flags it was given and prefers ES_SCHEDULER_URL to the URL file', async () => {
    const logDir = schedulerLogDir('flags', 'http://stale:1');
    const given = await launch(
      'launch-worker.slurm',
      ['--scheduler-url=http://given:2', '--secret-file', '/s', '--log-dir', '/l', '--model', 'm'],
      { ES_LOG_DIR: logDir },
    );
    expect(given.stdout.trim().split('\n').slice(5)).toEqual([
      '--scheduler-url=http://given:2',
      '--secret-file',
      '/s',
      '--log-dir',
      '/l',
      '--model',
      'm',
    ]);
    const fromEnv = await launch('launch-worker.slurm', ['--model', 'm'], {
      ES_LOG_DIR: logDir,
      ES_SCHEDULER_URL: 'http://env:3',
    });
    expect(fromEnv.stdout).toContain('--scheduler-url\nhttp://env:3\n');
  });

  it('exits 2 and says how to fix a missing scheduler URL or secret', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const noUrl = await launch('launch-worker.slurm', ['--model', 'm'], { ES_LOG_DIR: empty });
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain('no scheduler URL: pass --scheduler-url');
    expect(noUrl.stderr).toContain(join(empty, 'worker-url'));
    expect(noUrl.stdout).toBe('');

    const noSecret = await launch('launch-worker.slurm', ['--model', 'm'], {
      ES_LOG_DIR: empty,
      ES_SCHEDULER_URL: 'http://login1:8780',
    });
    expect(noSecret.code).toBe(2);
    expect(noSecret.stderr).toContain(
      `cannot read the scheduler's secret ${join(empty, 'secret')}`,
    );
  });
});

describe('launch-scheduler.sh', () => {
  it('exits 1 with the scheduler’s own error when it stops before serving', async () => {
    const logDir = join(dir, 'bad');
    const result = await launch(
      'launch-scheduler.sh',
      ['--backend', 'local', '--model', 'm', '--bogus-flag', '--log-dir', logDir],
      {},
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('the scheduler exited before serving');
    expect(result.stderr).toContain('es-scheduler: Unknown argument: bogus-flag (');
  });
});
