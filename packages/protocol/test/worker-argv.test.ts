import { describe, expect, it } from 'vitest';
import {
  ENGINE_KINDS,
  WORKER_ENV,
  WORKER_FLAGS,
  WorkerArgvError,
  commandLineValueProblem,
  isProtocolError,
  buildWorkerArgv,
  buildWorkerEnv,
  defaultHandoverMargin,
  missingWorkerFlag,
  workerGraceProblem,
  readWorkerArgv,
  workerYargsOptions,
} from '../src/index.js';
import type { WorkerArgvInput } from '../src/index.js';

function errorOf(fn: () => unknown): WorkerArgvError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(WorkerArgvError);
    expect(isProtocolError(error)).toBe(true);
    expect((error as WorkerArgvError).code).toBe('invalid_worker_argv');
    return error as WorkerArgvError;
  }
  throw new Error('expected a WorkerArgvError');
}

describe('buildWorkerArgv', () => {
  it('passes the given options in --help order, each as one --flag=value word, leaving the others to their defaults', () => {
    expect(
      buildWorkerArgv({
        tensorParallelSize: 4,
        model: 'Qwen/Qwen3-32B',
        engine: 'sglang',
        servedModelName: undefined,
        basePort: 0,
      }),
    ).toEqual([
      '--engine=sglang',
      '--model=Qwen/Qwen3-32B',
      '--base-port=0',
      '--tensor-parallel-size=4',
    ]);
  });

  it('keeps values a parser would take for a flag, and empty ones, inside their word', () => {
    expect(buildWorkerArgv({ model: 'm', engineExtraArgs: '--enforce-eager --x "a b"' })).toEqual([
      '--model=m',
      '--engine-extra-args=--enforce-eager --x "a b"',
    ]);
    expect(buildWorkerArgv({ model: 'm', engineExtraArgs: '' })).toEqual([
      '--model=m',
      '--engine-extra-args=',
    ]);
    expect(buildWorkerArgv({ model: 'm', restartCount: -1 })).toContain('--restart-count=-1');
  });

  it.each([
    ['servedModelName', 'served-model-name', '--engine-bin=/bin/sh'],
    ['model', 'model', '-x'],
    ['deployment', 'deployment', '--engine-bin=/bin/sh'],
  ] as const)('refuses a %s that starts with "-", naming the flag', (option, flag, value) => {
    expect(errorOf(() => buildWorkerArgv({ model: 'm', [option]: value }))).toMatchObject({
      param: flag,
      message: `es-worker --${flag} ${JSON.stringify(value)} starts with "-": a name cannot (a command line would read it as a flag); pass a name that starts with a letter, digit, "/" or "."`,
    });
  });

  it('refuses an empty name and any value with a line break or another control character', () => {
    expect(errorOf(() => buildWorkerArgv({ model: 'm', servedModelName: '' }))).toMatchObject({
      param: 'served-model-name',
      message:
        'es-worker --served-model-name is empty: pass a name, e.g. --served-model-name=Qwen3-32B',
    });
    for (const [option, flag] of [
      ['model', 'model'],
      ['engineExtraArgs', 'engine-extra-args'],
      ['logDir', 'log-dir'],
    ] as const) {
      for (const bad of ['a\nb', 'a\rb', 'a\u0000b', 'a\u001bb']) {
        const error = errorOf(() => buildWorkerArgv({ model: 'm', [option]: bad }));
        expect(error.param).toBe(flag);
        expect(error.message).toContain('contains a control character');
      }
    }
    expect(commandLineValueProblem('conda-env', 'my-env', { name: true })).toBeUndefined();
    expect(commandLineValueProblem('engine-extra-args', '--max-num-seqs 256')).toBeUndefined();
  });

  it('refuses to build without a required option, naming the flag', () => {
    const error = errorOf(() => buildWorkerArgv({ engine: 'vllm' } as unknown as WorkerArgvInput));
    expect(error).toMatchObject({
      param: 'model',
      code: 'invalid_worker_argv',
      message: 'es-worker needs --model (option "model"): pass model',
    });
  });

  it('refuses unknown options, wrong types and values outside the choices, naming the flag', () => {
    expect(
      errorOf(() => buildWorkerArgv({ model: 'm', gpus: 8 } as unknown as WorkerArgvInput)),
    ).toMatchObject({
      param: 'gpus',
      message: 'es-worker has no option "gpus" (no flag to pass it)',
    });
    expect(
      errorOf(() =>
        buildWorkerArgv({ model: 'm', basePort: '8001' } as unknown as WorkerArgvInput),
      ),
    ).toMatchObject({
      param: 'base-port',
      message: 'es-worker --base-port (option "basePort") must be a finite number, got "8001"',
    });
    expect(errorOf(() => buildWorkerArgv({ model: 'm', maxModelLen: NaN }))).toMatchObject({
      param: 'max-model-len',
    });
    expect(
      errorOf(() => buildWorkerArgv({ model: 'm', engine: 'tgi' } as unknown as WorkerArgvInput)),
    ).toMatchObject({
      param: 'engine',
      message: `es-worker --engine (option "engine") must be one of ${ENGINE_KINDS.join(', ')}, got "tgi"`,
    });
  });
});

describe('buildWorkerEnv', () => {
  it('names the variables the worker reads', () => {
    expect(
      buildWorkerEnv({
        schedulerUrl: 'http://login1:8780',
        schedulerUrlFile: '/logs/scheduler-url',
        secretFile: '/logs/secret',
        deployment: 'llama',
        restartCount: 2,
        jobId: undefined,
      }),
    ).toEqual({
      [WORKER_ENV.schedulerUrl]: 'http://login1:8780',
      [WORKER_ENV.schedulerUrlFile]: '/logs/scheduler-url',
      [WORKER_ENV.secretFile]: '/logs/secret',
      [WORKER_ENV.deployment]: 'llama',
      SLURM_RESTART_COUNT: '2',
    });
  });

  it('refuses an option the worker reads from no variable', () => {
    expect(errorOf(() => buildWorkerEnv({ model: 'm' }))).toMatchObject({ param: 'model' });
  });
});

describe('the parser side', () => {
  it('makes one yargs option per flag; flags with choices show them instead of a type', () => {
    const options = workerYargsOptions();
    expect(Object.keys(options)).toEqual(Object.values(WORKER_FLAGS).map((spec) => spec.flag));
    expect(options.engine).toEqual({
      choices: ENGINE_KINDS,
      describe: 'Inference engine',
      default: 'vllm',
    });
    expect(options['base-port']).toEqual({
      type: 'number',
      describe: 'Port of instance 0; i gets +i (0: any free ports)',
      default: 8001,
    });
    expect(options.model).toEqual({ type: 'string', describe: 'Model path or hub id' });
  });

  it('reads flags by name, an absent one from its variable (a flag wins)', () => {
    const argv = readWorkerArgv(
      { model: 'm', 'base-port': 9000, 'job-id': '7', 'scheduler-url-file': undefined },
      {
        ES_SCHEDULER_URL: 'http://s:1',
        ES_SCHEDULER_URL_FILE: '',
        SLURM_JOB_ID: '42',
        SLURM_RESTART_COUNT: '3',
      },
    );
    expect(argv).toMatchObject({
      model: 'm',
      basePort: 9000,
      jobId: '7',
      schedulerUrl: 'http://s:1',
      schedulerUrlFile: undefined,
      restartCount: 3,
    });
  });

  it('names a missing required flag and how to pass it', () => {
    expect(missingWorkerFlag(readWorkerArgv({}))).toEqual({
      flag: 'model',
      message: '--model is required: pass --model <path or hub id>',
    });
    expect(missingWorkerFlag(readWorkerArgv({ model: 'm' }))).toBeUndefined();
  });
});

describe('workerGraceProblem (the drain timing rule of worker and scheduler)', () => {
  it.each([
    // drain grace, kill grace, margin → flag at fault (undefined: fine)
    [15, 5, undefined, undefined],
    [15, 5, 5, undefined],
    [15, 5, 0, undefined],
    [15, 5, 14.9, undefined],
    [0, 5, 0, undefined],
    [0, 5, undefined, undefined],
    [21, 5, 20, undefined],
    [15, 5, 15, 'handover-margin'],
    [15, 5, 20, 'handover-margin'],
    [15, 5, -1, 'handover-margin'],
    [0, 5, 1, 'handover-margin'],
    [22, 5, 5, 'drain-grace'],
    [-1, 5, undefined, 'drain-grace'],
    [15, 0, 5, 'kill-grace'],
  ] as const)('--drain-grace %s --kill-grace %s --handover-margin %s: %s', (d, k, m, flag) => {
    const problem = workerGraceProblem({
      drainGraceSeconds: d,
      killGraceSeconds: k,
      handoverMarginSeconds: m,
    });
    expect(problem?.flag).toBe(flag);
    if (problem && flag !== undefined) expect(problem.message).toContain(`--${flag}`);
  });

  it('names the flag and a margin that would do when the margin is too long', () => {
    expect(
      workerGraceProblem({ drainGraceSeconds: 8, killGraceSeconds: 5, handoverMarginSeconds: 8 }),
    ).toEqual({
      flag: 'handover-margin',
      message:
        '--handover-margin (8) must be >= 0 and shorter than --drain-grace (8): the hand-over happens that many seconds before the grace ends, so pass e.g. --handover-margin 4 or a longer --drain-grace (at most 26 - --kill-grace)',
    });
  });

  it('defaults the margin to 5 s, or half a grace shorter than 10 s', () => {
    expect([30, 15, 10, 8, 1, 0].map(defaultHandoverMargin)).toEqual([5, 5, 5, 4, 0.5, 0]);
  });
});
