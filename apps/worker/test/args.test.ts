import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WORKER_FLAGS, buildWorkerArgv } from '@es/protocol';
import type { WorkerArgvInput, WorkerFlagName } from '@es/protocol';
import { describe, expect, it } from 'vitest';
import { WorkerArgsError, parseWorkerArgs } from '../src/args.js';

const base = ['--scheduler-url', 'http://login1:8780', '--model', 'meta-llama/Llama-3-70B'];

describe('es-worker flags', () => {
  it("accepts every flag of the seed's worker with the seed's defaults", async () => {
    const args = await parseWorkerArgs(base, {});
    expect(args).toMatchObject({
      schedulerUrl: 'http://login1:8780',
      engine: 'vllm',
      model: 'meta-llama/Llama-3-70B',
      basePort: 8001,
      tensorParallelSize: 1,
      gpusPerNode: undefined,
      gpuMemoryUtilization: 0.9,
      maxModelLen: undefined,
      servedModelName: undefined,
      engineExtraArgs: '',
      deployment: 'Llama-3-70B',
      restartCount: 0,
      drainGraceSeconds: 15,
      killGraceSeconds: 5,
      handoverMarginSeconds: 5,
    });
    const all = await parseWorkerArgs(
      [
        ...base,
        '--engine',
        'sglang',
        '--base-port',
        '9001',
        '--tensor-parallel-size',
        '4',
        '--gpus-per-node',
        '8',
        '--gpu-memory-utilization',
        '0.85',
        '--max-model-len',
        '32768',
        '--served-model-name',
        'llama',
        // Like argparse, a value that starts with "--" needs the "=" form.
        '--engine-extra-args=--enable-prefix-caching --chat-template "a b"',
      ],
      {},
    );
    expect(all).toMatchObject({
      engine: 'sglang',
      basePort: 9001,
      tensorParallelSize: 4,
      gpusPerNode: 8,
      gpuMemoryUtilization: 0.85,
      maxModelLen: 32768,
      servedModelName: 'llama',
      engineExtraArgs: '--enable-prefix-caching --chat-template "a b"',
      deployment: 'llama',
    });
  });

  it('falls back to the environment the scheduler and SLURM set', async () => {
    const args = await parseWorkerArgs(['--model', 'm'], {
      ES_SCHEDULER_URL: 'http://127.0.0.1:8780',
      ES_DEPLOYMENT: 'prod',
      ES_SECRET_FILE: '/shared/secret',
      SLURM_JOB_ID: '4242',
      SLURM_RESTART_COUNT: '2',
    });
    expect(args).toMatchObject({
      schedulerUrl: 'http://127.0.0.1:8780',
      deployment: 'prod',
      secretFile: '/shared/secret',
      jobId: '4242',
      restartCount: 2,
    });
    const flagsWin = await parseWorkerArgs(
      ['--model', 'm', '--scheduler-url', 'http://x:1', '--job-id', '7', '--restart-count', '0'],
      { ES_SCHEDULER_URL: 'http://127.0.0.1:8780', SLURM_JOB_ID: '4242', SLURM_RESTART_COUNT: '2' },
    );
    expect(flagsWin).toMatchObject({ schedulerUrl: 'http://x:1', jobId: '7', restartCount: 0 });
  });

  it('takes the URL from --scheduler-url-file (or ES_SCHEDULER_URL_FILE) and keeps the file to follow', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-args-'));
    const file = join(dir, 'scheduler-url');
    writeFileSync(file, 'http://login2:8781\n');
    const fromFlag = await parseWorkerArgs(['--model', 'm', '--scheduler-url-file', file], {});
    expect(fromFlag).toMatchObject({ schedulerUrl: 'http://login2:8781', schedulerUrlFile: file });
    // The scheduler's environment: the URL it started with, and the file to follow.
    const fromEnv = await parseWorkerArgs(['--model', 'm'], {
      ES_SCHEDULER_URL: 'http://login1:8780',
      ES_SCHEDULER_URL_FILE: file,
    });
    expect(fromEnv).toMatchObject({ schedulerUrl: 'http://login1:8780', schedulerUrlFile: file });
    const missing = join(dir, 'nope');
    await expect(
      parseWorkerArgs(['--model', 'm', '--scheduler-url-file', missing], {}),
    ).rejects.toMatchObject({
      param: 'scheduler-url',
      message: `no scheduler URL: --scheduler-url-file ${missing} is missing or empty (is the scheduler serving?); pass --scheduler-url http://<scheduler-host>:<port>`,
    });
  });

  it.each([
    [['--model', 'm'], 'scheduler-url', /--scheduler-url is required: pass --scheduler-url/],
    [['--scheduler-url', 'login1:8780', '--model', 'm'], 'scheduler-url', /not an http\(s\) URL/],
    [['--scheduler-url', 'http://a:1'], 'model', /--model is required/],
    [[...base, '--tensor-parallel-size', '0'], 'tensor-parallel-size', /integer >= 1, got 0/],
    [[...base, '--base-port', '70000'], 'base-port', /<= 65535/],
    [[...base, '--base-port', '-1'], 'base-port', /integer >= 0/],
    [[...base, '--gpu-memory-utilization', '1.5'], 'gpu-memory-utilization', /in \(0, 1\]/],
    [[...base, '--drain-grace', '30'], 'drain-grace', /KillWait/],
    [[...base, '--kill-grace', '0'], 'kill-grace', /KillWait/],
    [
      [...base, '--handover-margin', '15'],
      'handover-margin',
      /--handover-margin \(15\) must be >= 0 and shorter than --drain-grace \(15\).*pass e\.g\. --handover-margin 5 or a longer --drain-grace/,
    ],
    [
      [...base, '--drain-grace', '4', '--handover-margin', '6'],
      'handover-margin',
      /shorter than --drain-grace \(4\).*--handover-margin 2 /,
    ],
    [[...base, '--handover-margin', '-1'], 'handover-margin', /must be >= 0/],
  ])('rejects %j naming the flag and the fix', async (argv, flag, message) => {
    const error = await parseWorkerArgs(argv, {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerArgsError);
    expect(error).toMatchObject({ param: flag, message: expect.stringMatching(message) });
  });

  it.each([
    // [drain grace, margin given, margin used]
    ['15', undefined, 5],
    ['20', undefined, 5],
    ['6', undefined, 3],
    ['1', undefined, 0.5],
    ['0', undefined, 0],
    ['0', '0', 0],
    ['15', '14.5', 14.5],
    ['15', '0', 0],
  ])(
    'with --drain-grace %s and --handover-margin %s hands over %s s before the grace ends',
    async (grace, margin, used) => {
      const argv = [...base, '--drain-grace', grace];
      if (margin !== undefined) argv.push('--handover-margin', margin);
      expect((await parseWorkerArgs(argv, {})).handoverMarginSeconds).toBe(used);
    },
  );

  it('rejects unknown engines and flags, naming the flag', async () => {
    await expect(parseWorkerArgs([...base, '--engine', 'tgi'], {})).rejects.toMatchObject({
      param: 'engine',
      message: expect.stringMatching(/tgi/),
    });
    const unknown = await parseWorkerArgs([...base, '--gpus', '8'], {}).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(WorkerArgsError);
    expect(unknown).toMatchObject({
      param: 'gpus',
      message: 'Unknown argument: gpus (see es-worker --help)',
    });
  });
});

describe('es-worker flags built by the scheduler (WORKER_FLAGS of @es/protocol)', () => {
  // Every flag, none at its default, values a parser could mistake for flags included.
  const every: Required<WorkerArgvInput> = {
    schedulerUrl: 'http://login1:8780',
    schedulerUrlFile: '/shared/logs/scheduler-url',
    engine: 'sglang',
    model: '/models/Qwen3-32B',
    basePort: 9001,
    tensorParallelSize: 4,
    gpusPerNode: 8,
    gpuMemoryUtilization: 0.85,
    maxModelLen: 32768,
    servedModelName: 'qwen',
    engineExtraArgs: '--enable-prefix-caching --chat-template "a b"',
    engineBin: '/opt/sglang/bin/python',
    deployment: 'qwen-prod',
    secretFile: '/shared/logs/secret',
    host: 'gpu7',
    logDir: '/shared/logs',
    jobId: '4242',
    restartCount: 3,
    drainGraceSeconds: 10,
    handoverMarginSeconds: 3,
    killGraceSeconds: 8,
    logLevel: 'debug',
  };

  it('gives back every option it was built from (build, then parse)', async () => {
    expect(Object.keys(every).sort()).toEqual(Object.keys(WORKER_FLAGS).sort());
    const args = await parseWorkerArgs(buildWorkerArgv(every), {});
    for (const name of Object.keys(WORKER_FLAGS) as WorkerFlagName[]) {
      expect({ [name]: args[name] }).toEqual({ [name]: every[name] });
    }
  });

  it('round-trips each flag alone (the others at their defaults)', async () => {
    for (const name of Object.keys(WORKER_FLAGS) as WorkerFlagName[]) {
      const options = { model: every.model, schedulerUrl: every.schedulerUrl, [name]: every[name] };
      const args = await parseWorkerArgs(buildWorkerArgv(options), {});
      expect({ [name]: args[name] }).toEqual({ [name]: every[name] });
    }
  });

  it('parses to the defaults of the table when a flag is not built', async () => {
    const args = await parseWorkerArgs(
      buildWorkerArgv({ model: 'm', schedulerUrl: 'http://s:1', jobId: '1' }),
      {},
    );
    for (const [name, spec] of Object.entries(WORKER_FLAGS)) {
      if ('default' in spec)
        expect({ [name]: args[name as WorkerFlagName] }).toEqual({ [name]: spec.default });
    }
  });
});

describe('names and values that go on to an engine argv', () => {
  it.each([
    [
      ['--served-model-name=--engine-bin=/bin/sh'],
      'served-model-name',
      '--served-model-name "--engine-bin=/bin/sh" starts with "-"',
    ],
    [['--served-model-name='], 'served-model-name', '--served-model-name is empty'],
    [['--deployment=-x'], 'deployment', '--deployment "-x" starts with "-"'],
    [['--served-model-name', 'a\nb'], 'served-model-name', 'contains a control character'],
    [['--engine-extra-args=--x 1\n--y'], 'engine-extra-args', 'contains a control character'],
    [['--log-dir', '/l\r'], 'log-dir', 'contains a control character'],
  ])('refuses %j naming the flag', async (extra, flag, message) => {
    const error = await parseWorkerArgs([...base, ...extra], {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WorkerArgsError);
    expect(error).toMatchObject({ param: flag });
    expect((error as Error).message).toContain(message);
  });

  it('refuses a --model that starts with "-" and a deployment from the environment with a newline', async () => {
    await expect(
      parseWorkerArgs(['--scheduler-url', 'http://a:1', '--model=--engine-bin=/bin/sh'], {}),
    ).rejects.toMatchObject({
      param: 'model',
      message: expect.stringContaining('starts with "-"'),
    });
    await expect(parseWorkerArgs(base, { ES_DEPLOYMENT: 'd\nx' })).rejects.toMatchObject({
      param: 'deployment',
      message: expect.stringContaining('contains a control character'),
    });
  });
});
