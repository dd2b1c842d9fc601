import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { renderBatchScript, SHARED_PATH_HINT, shellQuote, SlurmError } from '../src/index.js';
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
    [
      'whole nodes with every GPU, at least 4',
      { gpusPerNode: 4, wholeNodeGpus: true },
      [
        '--job-name="es-llama"',
        '--nodes=1',
        '--gpus-per-node=4',
        '--exclusive',
        '--output="/scratch/logs/%x-%j.out"',
        '--error="/scratch/logs/%x-%j.err"',
      ],
    ],
    [
      'whole nodes and exclusive: one --exclusive',
      { gpusPerNode: 8, wholeNodeGpus: true, exclusive: true },
      [
        '--job-name="es-llama"',
        '--nodes=1',
        '--gpus-per-node=8',
        '--exclusive',
        '--output="/scratch/logs/%x-%j.out"',
        '--error="/scratch/logs/%x-%j.err"',
      ],
    ],
  ])('%s', (_label, extra, expected) => {
    expect(sbatchLines({ ...base, ...extra })).toEqual(expected);
  });

  it.each<[string, Partial<JobSpec>, string]>([
    ['by default', { gpusPerNode: 8 }, 'exec srun --ntasks=1 -- es-worker'],
    [
      'with whole nodes',
      { gpusPerNode: 4, wholeNodeGpus: true },
      'exec srun --ntasks=1 --gres=gpu:"$SLURM_GPUS_ON_NODE" -- es-worker',
    ],
  ])('gives the step the GPUs of the job %s', (_label, extra, line) => {
    expect(
      renderBatchScript({ ...base, ...extra })
        .trimEnd()
        .split('\n')
        .at(-1),
    ).toBe(line);
  });

  it('refuses whole nodes without a GPU count, naming both fields and the fix', () => {
    expect(() => renderBatchScript({ ...base, wholeNodeGpus: true })).toThrow(
      expect.objectContaining({
        code: 'slurm_invalid_spec',
        kind: 'permanent',
        message: expect.stringMatching(/^wholeNodeGpus needs gpusPerNode, .*: set gpusPerNode/),
      }),
    );
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
  ])('refuses %s with a permanent slurm_invalid_spec error', (_label, extra) => {
    let error: unknown;
    try {
      renderBatchScript({ ...base, ...extra });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SlurmError);
    expect(error).toMatchObject({ code: 'slurm_invalid_spec', kind: 'permanent' });
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

describe('renderBatchScript: the pre-flight check of Node and the checkout', () => {
  /** The lines between the #SBATCH block and the set-up (or the exports, or srun). */
  const preflightOf = (spec: Partial<JobSpec>): string[] => {
    const lines = renderBatchScript({ ...base, ...spec }).split('\n');
    const start = lines.indexOf('# pre-flight: what the command needs must exist on this node');
    if (start === -1) return [];
    return lines.slice(start + 1, lines.indexOf('', start));
  };
  const check = (test: string, message: string) => [
    `if ${test}; then`,
    `  es_missing=$(printf 'es: %s ${message} at %s on %s: %s' ${'${WHAT}'} ${'${PATH_}'} "\${SLURMD_NODENAME:-$(hostname)}" '${SHARED_PATH_HINT}')`,
    `  printf '%s\\n' "$es_missing"`,
    `  printf '%s\\n' "$es_missing" >&2`,
    '  exit 1',
    'fi',
  ];
  const fill = (lines: string[], what: string, path: string) =>
    lines.map((line) => line.replace('${WHAT}', what).replace('${PATH_}', path));
  const node = (path: string) =>
    fill(
      check(`[ ! -f ${path} ] || [ ! -x ${path} ]`, 'not found (or not executable)'),
      'node',
      path,
    );

  it.each<[string, Partial<JobSpec>, string[]]>([
    ['a command found on PATH: nothing to check', { command: ['es-worker', '--model', '/m'] }, []],
    [
      'an absolute program without a script',
      { command: ['/opt/node/bin/node', '--version'] },
      node('/opt/node/bin/node'),
    ],
    [
      "the scheduler's worker command: Node, then the checkout's worker script",
      { command: ['/opt/node/bin/node', '/home/u/es/apps/worker/dist/cli.mjs', '--model', '/m'] },
      [
        ...node('/opt/node/bin/node'),
        ...fill(
          check(`[ ! -f /home/u/es/apps/worker/dist/cli.mjs ]`, 'not found'),
          "'the script node runs'",
          '/home/u/es/apps/worker/dist/cli.mjs',
        ),
      ],
    ],
    [
      'paths with spaces and quotes are quoted',
      { command: ["/opt/my node/bin/node's"] },
      fill(
        check(
          `[ ! -f '/opt/my node/bin/node'\\''s' ] || [ ! -x '/opt/my node/bin/node'\\''s' ]`,
          'not found (or not executable)',
        ),
        "'node'\\''s'",
        "'/opt/my node/bin/node'\\''s'",
      ),
    ],
    ['requiredPaths [] checks nothing', { command: ['/opt/node/bin/node'], requiredPaths: [] }, []],
    [
      'explicit requiredPaths replace the derived ones (a directory, a hint of its own)',
      {
        command: ['/opt/node/bin/node'],
        requiredPaths: [
          { path: '/shared/logs', kind: 'directory', what: 'the log directory', hint: 'share it' },
        ],
      },
      [
        'if [ ! -d /shared/logs ]; then',
        `  es_missing=$(printf 'es: %s not found at %s on %s: %s' 'the log directory' /shared/logs "\${SLURMD_NODENAME:-$(hostname)}" 'share it')`,
        `  printf '%s\\n' "$es_missing"`,
        `  printf '%s\\n' "$es_missing" >&2`,
        '  exit 1',
        'fi',
      ],
    ],
  ])('%s', (_label, spec, expected) => {
    expect(preflightOf(spec)).toEqual(expected);
  });

  it('checks before anything else: before the set-up and the exports', () => {
    const script = renderBatchScript({
      ...base,
      setup: ['conda activate serve'],
      env: { A: '1' },
      command: ['/opt/node/bin/node', '/es/cli.mjs'],
    });
    const at = (text: string) => script.indexOf(text);
    expect(at('# pre-flight')).toBeGreaterThan(at('#SBATCH --error'));
    expect(at('# pre-flight')).toBeLessThan(at('conda activate serve'));
    expect(at('fi\n')).toBeLessThan(at('export A=1'));
  });

  it('refuses a relative required path', () => {
    expect(() =>
      renderBatchScript({
        ...base,
        requiredPaths: [{ path: 'bin/node', kind: 'file', what: 'x' }],
      }),
    ).toThrow(/requiredPaths: "bin\/node" is not an absolute path/);
  });

  /** A copy of a checkout: an executable `node` and the worker script, plus a fake srun. */
  async function fakeNode() {
    const dir = await mkdtemp(join(tmpdir(), 'es node checkout-'));
    const node = join(dir, 'bin', 'node');
    const cli = join(dir, 'apps', 'worker', 'dist', 'cli.mjs');
    await run('mkdir', [
      '-p',
      join(dir, 'bin'),
      join(dir, 'apps', 'worker', 'dist'),
      join(dir, 'path'),
    ]);
    await writeFile(node, '#!/bin/sh\n');
    await chmod(node, 0o755);
    await writeFile(cli, '');
    // srun records that it was reached (and with what).
    await writeFile(
      join(dir, 'path', 'srun'),
      `#!/bin/bash\nprintf '%s\\n' "$@" > "$ES_OUT/srun"\n`,
    );
    await chmod(join(dir, 'path', 'srun'), 0o755);
    const script = join(dir, 'job.sh');
    await writeFile(
      script,
      renderBatchScript({
        ...base,
        setup: ['echo set-up ran'],
        command: [node, cli, '--model', 'm'],
      }),
    );
    const exec = (env: Record<string, string> = {}) =>
      run('bash', [script], {
        env: {
          ...process.env,
          PATH: `${join(dir, 'path')}:${process.env.PATH ?? ''}`,
          ES_OUT: dir,
          ...env,
        },
      }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
    return { dir, node, cli, exec, srunReached: () => existsSync(join(dir, 'srun')) };
  }

  it('runs the command when Node and the checkout are there', async () => {
    const job = await fakeNode();
    const result = await job.exec();
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('set-up ran\n');
    expect(await readFile(join(job.dir, 'srun'), 'utf8')).toBe(
      ['--ntasks=1', '--', job.node, job.cli, '--model', 'm', ''].join('\n'),
    );
  });

  it.each<
    [
      string,
      (job: Awaited<ReturnType<typeof fakeNode>>) => Promise<void>,
      (job: Awaited<ReturnType<typeof fakeNode>>) => string,
    ]
  >([
    [
      'Node missing',
      (job) => rm(job.node),
      (job) => `es: node not found (or not executable) at ${job.node}`,
    ],
    [
      'Node not executable',
      (job) => chmod(job.node, 0o644),
      (job) => `es: node not found (or not executable) at ${job.node}`,
    ],
    [
      'the checkout missing',
      (job) => rm(join(job.dir, 'apps'), { recursive: true }),
      (job) => `es: the script node runs not found at ${job.cli}`,
    ],
  ])(
    '%s: exit 1 before the set-up, the message says what to fix',
    async (_label, breakIt, start) => {
      const job = await fakeNode();
      await breakIt(job);
      for (const [env, node] of [
        [{ SLURMD_NODENAME: '' }, hostname()],
        [{ SLURMD_NODENAME: 'gpu7' }, 'gpu7'],
      ] as const) {
        const result = await job.exec(env);
        const message = `${start(job)} on ${node}: ${SHARED_PATH_HINT}\n`;
        expect(result.code).toBe(1);
        // In the job's .out (stdout) and .err (stderr); the set-up never ran, srun was not reached.
        expect(result.stdout).toBe(message);
        expect(result.stderr).toBe(message);
        expect(job.srunReached()).toBe(false);
      }
    },
  );
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
