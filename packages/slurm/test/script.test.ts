import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { renderBatchScript, shellQuote, SlurmError } from '../src/index.js';
import type { JobSpec } from '../src/index.js';

const run = promisify(execFile);
const base: JobSpec = { name: 'es-llama', logDir: '/scratch/logs', command: ['es-worker'] };

function sbatchLines(spec: JobSpec): string[] {
  return renderBatchScript(spec)
    .split('\n')
    .filter((l) => l.startsWith('#SBATCH '))
    .map((l) => l.slice('#SBATCH '.length));
}

describe('renderBatchScript', () => {
  it.each<[string, Partial<JobSpec>, string[]]>([
    [
      'minimal',
      {},
      [
        '--job-name="es-llama"',
        '--nodes=1',
        '--output="/scratch/logs/%x-%j.out"',
        '--error="/scratch/logs/%x-%j.err"',
      ],
    ],
    [
      'every option',
      {
        comment: 'es-llama-7f3a',
        gpusPerNode: 8,
        timeLimitMinutes: 240,
        partition: 'low',
        qos: 'lowest',
        account: 'proj-1',
        constraint: 'h200&ib',
        exclusive: true,
        requeue: true,
        output: '/o/%j.log',
        error: '/e/%j.log',
        signal: 'B:USR1@120',
        extraSbatch: ['--mem=0', '  --cpus-per-task=16 '],
      },
      [
        '--job-name="es-llama"',
        '--comment="es-llama-7f3a"',
        '--nodes=1',
        '--gpus-per-node=8',
        '--time=240',
        '--partition="low"',
        '--qos="lowest"',
        '--account="proj-1"',
        '--constraint="h200&ib"',
        '--exclusive',
        '--requeue',
        '--output="/o/%j.log"',
        '--error="/e/%j.log"',
        '--signal="B:USR1@120"',
        '--mem=0',
        '--cpus-per-task=16',
      ],
    ],
    [
      'requeue false',
      { requeue: false, exclusive: false },
      [
        '--job-name="es-llama"',
        '--nodes=1',
        '--no-requeue',
        '--output="/scratch/logs/%x-%j.out"',
        '--error="/scratch/logs/%x-%j.err"',
      ],
    ],
    [
      'sbatch-special characters are escaped, shell characters are literal',
      { name: 'a "b" \\c #d $e `f`', comment: 'x y#z', logDir: '/dir with space/' },
      [
        '--job-name="a \\"b\\" \\\\c \\#d $e `f`"',
        '--comment="x y\\#z"',
        '--nodes=1',
        '--output="/dir with space/%x-%j.out"',
        '--error="/dir with space/%x-%j.err"',
      ],
    ],
  ])('%s', (_label, extra, expected) => {
    expect(sbatchLines({ ...base, ...extra })).toEqual(expected);
  });

  it('puts set-up lines, then exports, then exec srun with the command', () => {
    const script = renderBatchScript({
      ...base,
      setup: ['source /opt/conda/etc/profile.d/conda.sh', 'conda activate serve'],
      env: { HF_HOME: '/scratch/hf', A: 'x y' },
      command: ['es-worker', '--port', '8000'],
    });
    const body = script.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(script.startsWith('#!/bin/bash\n')).toBe(true);
    expect(body).toEqual([
      'source /opt/conda/etc/profile.d/conda.sh',
      'conda activate serve',
      'export HF_HOME=/scratch/hf',
      "export A='x y'",
      'exec srun --ntasks=1 -- es-worker --port 8000',
    ]);
  });

  it.each<[string, Partial<JobSpec>]>([
    ['a newline in the name', { name: 'a\n#SBATCH --qos=high' }],
    ['a newline in the comment', { comment: 'x\ny' }],
    ['a newline in an extra #SBATCH line', { extraSbatch: ['--mem=0\nrm -rf /'] }],
    ['an invalid environment name', { env: { 'A B': '1' } }],
    ['an environment name with a command', { env: { 'X=$(id)': '1' } }],
    ['an empty command', { command: [] }],
    ['an empty name', { name: '' }],
    ['a fractional GPU count', { gpusPerNode: 1.5 }],
    ['a zero time limit', { timeLimitMinutes: 0 }],
    ['NUL in an argument', { command: ['a\0b'] }],
  ])('refuses %s with a permanent SLURM_INVALID_SPEC error', (_label, extra) => {
    let error: unknown;
    try {
      renderBatchScript({ ...base, ...extra });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SlurmError);
    expect(error).toMatchObject({ code: 'SLURM_INVALID_SPEC', kind: 'permanent' });
  });

  it('delivers nasty arguments and environment values byte-exact to the srun step', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'es-render-'));
    // A fake srun that records its argv (NUL-separated) and two environment variables.
    await writeFile(
      join(dir, 'srun'),
      `#!/bin/bash\nprintf '%s\\0' "$@" > "$ES_OUT/argv"\nprintf '%s\\0' "$NASTY" "$MULTI" > "$ES_OUT/env"\n`,
    );
    await chmod(join(dir, 'srun'), 0o755);
    const nasty = [
      '/models/Llama 3 70B',
      '$HOME',
      '${PATH}',
      '`id`',
      '$(touch /tmp/es-pwned)',
      "it's",
      '"double"',
      'back\\slash',
      'semi;colon && echo no',
      '*',
      '~',
      '--flag=a b',
      '',
      'new\nline',
      '\t tab',
      'ünïcode ✓',
      "'",
      "'\\''",
      '#not-a-comment',
      '!!',
    ];
    const script = renderBatchScript({
      ...base,
      env: { NASTY: `$(id) \`id\` 'q' "dq" \\ !`, MULTI: 'line1\nline2' },
      command: ['prog', ...nasty],
    });
    const scriptPath = join(dir, 'job.sh');
    await writeFile(scriptPath, script);
    await run('bash', [scriptPath], {
      env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}`, ES_OUT: dir },
    });
    const argv = (await readFile(join(dir, 'argv'), 'utf8')).split('\0').slice(0, -1);
    expect(argv).toEqual(['--ntasks=1', '--', 'prog', ...nasty]);
    const env = (await readFile(join(dir, 'env'), 'utf8')).split('\0').slice(0, -1);
    expect(env).toEqual([`$(id) \`id\` 'q' "dq" \\ !`, 'line1\nline2']);
  });
});

describe('shellQuote', () => {
  it.each([
    ['plain', 'plain'],
    ['/a/b-c_d.e:f=g@h%i+j,k', '/a/b-c_d.e:f=g@h%i+j,k'],
    ['', "''"],
    ['a b', "'a b'"],
    ["it's", "'it'\\''s'"],
    ['$x', "'$x'"],
  ])('%j → %s', (input, quoted) => {
    expect(shellQuote(input)).toBe(quoted);
  });
});
