import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { engineAdapter, mockEngineCliPath, parsePrometheus, splitArgs } from '../src/index.js';
import type { EngineSpec } from '../src/index.js';
import {
  SGLANG_KEY_VARIABLE,
  SGLANG_LAUNCHER,
  parseEngineVersion,
  vllmAcceptsDisableLogRequests,
} from '../src/engines.js';

const base: EngineSpec = {
  engine: 'vllm',
  model: 'openai/gpt-oss-120b',
  listen: { socketPath: '/tmp/es-Ab12Cd/engine-1.sock' },
  gpus: [4, 5, 6, 7],
  tensorParallelSize: 4,
  gpuMemoryUtilization: 0.9,
};
const loopback: EngineSpec['listen'] = { host: '127.0.0.1', port: 38002 };

describe('engine argv', () => {
  it('vllm: serve <model> on its Unix socket, every value as --flag=value, the key in VLLM_API_KEY', () => {
    expect(engineAdapter('vllm').command({ ...base, apiKey: 'es-engine-job-key' })).toEqual({
      command: 'vllm',
      args: [
        'serve',
        'openai/gpt-oss-120b',
        '--uds=/tmp/es-Ab12Cd/engine-1.sock',
        '--tensor-parallel-size=4',
        '--gpu-memory-utilization=0.9',
        '--trust-remote-code',
      ],
      env: { CUDA_VISIBLE_DEVICES: '4,5,6,7', VLLM_API_KEY: 'es-engine-job-key' },
    });
  });

  it('vllm: a loopback port when it cannot take a Unix socket; optional flags, then extra args kept as single words', () => {
    const { args, env } = engineAdapter('vllm').command({
      ...base,
      listen: loopback,
      maxModelLen: 32768,
      servedModelName: 'gpt-oss',
      apiKey: 'secret-key',
      extraArgs: splitArgs(`--chat-template "/models/my template.jinja" --override '{"a": 1}'`),
    });
    expect(args.slice(2)).toEqual([
      '--host=127.0.0.1',
      '--port=38002',
      '--tensor-parallel-size=4',
      '--gpu-memory-utilization=0.9',
      '--max-model-len=32768',
      '--served-model-name=gpt-oss',
      '--trust-remote-code',
      '--chat-template',
      '/models/my template.jinja',
      '--override',
      '{"a": 1}',
    ]);
    expect(args.join(' ')).not.toContain('secret-key');
    expect(env.VLLM_API_KEY).toBe('secret-key');
  });

  it.each<[string | undefined, boolean]>([
    ['0.10.0', true],
    ['0.11.2', true],
    ['0.12.0rc1.dev5+g1234', true],
    ['1.0.0', true],
    ['0.9.2', false],
    ['0.6.3.post1', false],
    [undefined, false],
    ['dev', false],
  ])('vllm %j takes a Unix socket: %s', (version, takes) => {
    expect(engineAdapter('vllm').unixSocket(version)).toBe(takes);
  });

  it('sglang: loopback only, launched through the key launcher with its own flag names; the key in its environment', () => {
    const command = engineAdapter('sglang').command({
      ...base,
      engine: 'sglang',
      listen: loopback,
      maxModelLen: 8192,
      servedModelName: 'm',
      apiKey: 'es-engine-job-key',
      extraArgs: ['--attention-backend', 'fa3'],
    });
    expect(engineAdapter('sglang').unixSocket('0.5.0')).toBe(false);
    expect(command).toEqual({
      command: 'python',
      args: [
        '-c',
        SGLANG_LAUNCHER,
        '--model-path=openai/gpt-oss-120b',
        '--host=127.0.0.1',
        '--port=38002',
        '--tp-size=4',
        '--mem-fraction-static=0.9',
        '--context-length=8192',
        '--served-model-name=m',
        '--trust-remote-code',
        '--enable-metrics',
        '--attention-backend',
        'fa3',
      ],
      env: { CUDA_VISIBLE_DEVICES: '4,5,6,7', [SGLANG_KEY_VARIABLE]: 'es-engine-job-key' },
    });
    // The launcher appends the key inside Python, removes it from the environment and runs
    // sglang.launch_server as `python -m` would.
    expect(SGLANG_LAUNCHER).toContain(`os.environ.pop("${SGLANG_KEY_VARIABLE}"`);
    expect(SGLANG_LAUNCHER).toContain("'--api-key', key");
    expect(SGLANG_LAUNCHER).toContain(
      "runpy.run_module('sglang.launch_server', run_name='__main__'",
    );
  });

  it('sglang: --enable-metrics is not doubled when given in extra args', () => {
    const { args } = engineAdapter('sglang').command({
      ...base,
      engine: 'sglang',
      extraArgs: ['--enable-metrics'],
    });
    expect(args.filter((arg) => arg === '--enable-metrics')).toHaveLength(1);
  });

  it('an engine binary override replaces the executable only', () => {
    const command = engineAdapter('vllm').command({ ...base, engineBin: '/opt/venv/bin/vllm' });
    expect(command.command).toBe('/opt/venv/bin/vllm');
    expect(command.args[0]).toBe('serve');
  });

  it('a served model name or model that looks like a flag stays a value (or is refused)', () => {
    for (const engine of ['vllm', 'sglang', 'mock'] as const) {
      const { args } = engineAdapter(engine).command({
        ...base,
        engine,
        servedModelName: '--engine-bin=/bin/sh',
      });
      expect(args).toContain('--served-model-name=--engine-bin=/bin/sh');
      expect(args).not.toContain('--engine-bin=/bin/sh');
    }
    expect(() => engineAdapter('vllm').command({ ...base, model: '--engine-bin=/bin/sh' })).toThrow(
      /model "--engine-bin=\/bin\/sh" is not a model path/,
    );
    expect(engineAdapter('mock').command({ ...base, engine: 'mock', model: '-x' }).args).toContain(
      '--model=-x',
    );
    expect(() =>
      engineAdapter('vllm').command({ ...base, servedModelName: 'm\n--port=1' }),
    ).toThrow(/served-model-name must be one line/);
  });

  it("mock: the mock engine's CLI under this Node, with vLLM's flags and key variable", () => {
    const command = engineAdapter('mock').command({
      ...base,
      engine: 'mock',
      servedModelName: 'm',
      apiKey: 'k',
      extraArgs: ['--load-delay', '500'],
    });
    expect(command.command).toBe(process.execPath);
    expect(command.args).toEqual([
      mockEngineCliPath(),
      '--model=openai/gpt-oss-120b',
      '--uds=/tmp/es-Ab12Cd/engine-1.sock',
      '--served-model-name=m',
      '--load-delay',
      '500',
    ]);
    expect(command.env).toEqual({ CUDA_VISIBLE_DEVICES: '4,5,6,7', VLLM_API_KEY: 'k' });
    expect(engineAdapter('mock').unixSocket(undefined)).toBe(true);
    expect(mockEngineCliPath()).toMatch(/mock-engine[/\\]dist[/\\]cli\.mjs$/);
    expect(existsSync(mockEngineCliPath().replace(/dist[/\\]cli\.mjs$/, 'package.json'))).toBe(
      true,
    );
  });
});

describe('engine flags the seed passed (--trust-remote-code, --disable-log-requests)', () => {
  const flagsOf = (spec: Partial<EngineSpec>) =>
    engineAdapter(spec.engine ?? 'vllm')
      .command({ ...base, ...spec })
      .args.filter((arg) => /^--(no-)?trust-remote-code$|log-requests$/.test(arg));

  it.each<[string, Partial<EngineSpec>, string[]]>([
    ['vllm, version unknown', {}, ['--trust-remote-code']],
    ['vllm 0.11.2', { engineVersion: '0.11.2' }, ['--trust-remote-code', '--disable-log-requests']],
    [
      'vllm 0.6.3.post1',
      { engineVersion: '0.6.3.post1' },
      ['--trust-remote-code', '--disable-log-requests'],
    ],
    [
      'vllm 0.10.1.1',
      { engineVersion: '0.10.1.1' },
      ['--trust-remote-code', '--disable-log-requests'],
    ],
    ['vllm 0.12.0 (flag removed)', { engineVersion: '0.12.0' }, ['--trust-remote-code']],
    [
      'vllm 0.12.0rc1.dev5+g1234',
      { engineVersion: '0.12.0rc1.dev5+g1234' },
      ['--trust-remote-code'],
    ],
    ['vllm 0.13.1', { engineVersion: '0.13.1' }, ['--trust-remote-code']],
    ['vllm 1.0.0', { engineVersion: '1.0.0' }, ['--trust-remote-code']],
    ['vllm, unreadable version', { engineVersion: 'dev' }, ['--trust-remote-code']],
    [
      'vllm, trustRemoteCode false',
      { trustRemoteCode: false, engineVersion: '0.11.0' },
      ['--disable-log-requests'],
    ],
    [
      'vllm, --no-trust-remote-code in extra args (not passed on)',
      { extraArgs: ['--no-trust-remote-code', '--enforce-eager'] },
      [],
    ],
    [
      'vllm, --trust-remote-code in extra args (not doubled)',
      { extraArgs: ['--trust-remote-code'] },
      ['--trust-remote-code'],
    ],
    [
      'vllm 0.11, --enable-log-requests in extra args (the user decides)',
      { engineVersion: '0.11.0', extraArgs: ['--enable-log-requests'] },
      ['--trust-remote-code', '--enable-log-requests'],
    ],
    [
      'vllm 0.11, --disable-log-requests in extra args (not doubled)',
      { engineVersion: '0.11.0', extraArgs: ['--disable-log-requests'] },
      ['--trust-remote-code', '--disable-log-requests'],
    ],
    [
      'sglang (its request logging is off by default)',
      { engine: 'sglang', engineVersion: '0.11.0' },
      ['--trust-remote-code'],
    ],
    ['sglang, trustRemoteCode false', { engine: 'sglang', trustRemoteCode: false }, []],
    [
      'sglang, --no-trust-remote-code in extra args',
      { engine: 'sglang', extraArgs: ['--no-trust-remote-code'] },
      [],
    ],
    ['mock (not a real engine)', { engine: 'mock', engineVersion: '0.11.0' }, []],
    [
      'mock, --no-trust-remote-code in extra args (not passed on)',
      { engine: 'mock', extraArgs: ['--no-trust-remote-code'] },
      [],
    ],
  ])('%s', (_label, spec, expected) => {
    expect(flagsOf(spec)).toEqual(expected);
  });

  it('vllm always asks `vllm --version` (or the engine binary): the Unix socket depends on it', () => {
    const vllm = engineAdapter('vllm');
    expect(vllm.versionCommand?.({})).toEqual({ command: 'vllm', args: ['--version'], env: {} });
    expect(vllm.versionCommand?.({ engineBin: '/opt/venv/bin/vllm' })?.command).toBe(
      '/opt/venv/bin/vllm',
    );
    expect(vllm.versionCommand?.({ extraArgs: ['--enable-log-requests'] })?.args).toEqual([
      '--version',
    ]);
    expect(engineAdapter('sglang').versionCommand).toBeUndefined();
    expect(engineAdapter('mock').versionCommand).toBeUndefined();
  });

  it.each<[string, string | undefined]>([
    ['0.11.2\n', '0.11.2'],
    [
      'INFO 11-30 17:00:00 [__init__.py:216] Automatically detected platform cuda.\n0.10.1.1\n',
      '0.10.1.1',
    ],
    ['0.12.0rc1.dev5+g1234abc\n', '0.12.0rc1.dev5+g1234abc'],
    ['v0.9.2', '0.9.2'],
    ['', undefined],
    ['Traceback (most recent call last):\nImportError: libcuda.so.1\n', undefined],
    ['vllm 0.11.0 is installed\n', undefined],
  ])('parseEngineVersion(%j) = %s', (output, version) => {
    expect(parseEngineVersion(output)).toBe(version);
  });

  it.each<[string | undefined, boolean]>([
    ['0.11.2', true],
    ['0.5.4', true],
    ['0.12.0', false],
    ['0.12', false],
    ['1.2.0', false],
    [undefined, false],
    ['', false],
  ])('vllmAcceptsDisableLogRequests(%j) = %s', (version, accepts) => {
    expect(vllmAcceptsDisableLogRequests(version)).toBe(accepts);
  });
});

describe('load probes', () => {
  it('vllm: running, waiting and the KV gauge under its older name', () => {
    const text = [
      '# HELP vllm:num_requests_running Number of requests.',
      '# TYPE vllm:num_requests_running gauge',
      'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
      'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0',
      'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25',
      'vllm:num_requests_running_total_not_this 99',
    ].join('\n');
    expect(engineAdapter('vllm').parseLoad(text)).toEqual({
      running: 3,
      waiting: 2,
      kvCacheUsage: 0.25,
    });
  });

  it('vllm: the newer KV gauge name wins, series are summed across label sets', () => {
    const text = [
      'vllm:num_requests_running{engine="0"} 1',
      'vllm:num_requests_running{engine="1"} 4',
      'vllm:kv_cache_usage_perc{engine="0"} 0.5',
    ].join('\n');
    expect(engineAdapter('vllm').parseLoad(text)).toEqual({
      running: 5,
      waiting: 0,
      kvCacheUsage: 0.5,
    });
  });

  it('sglang: its own gauge names', () => {
    const text = [
      'sglang:num_running_reqs{model_name="m"} 7',
      'sglang:num_queue_reqs{model_name="m"} 1',
      'sglang:token_usage{model_name="m"} 0.8',
    ].join('\n');
    expect(engineAdapter('sglang').parseLoad(text)).toEqual({
      running: 7,
      waiting: 1,
      kvCacheUsage: 0.8,
    });
  });

  it('no KV gauge → no kvCacheUsage; junk lines are skipped', () => {
    const metrics = parsePrometheus('garbage line\nvllm:num_requests_waiting NaN\nx 1e3\n');
    expect(metrics.get('x')).toBe(1000);
    expect(metrics.has('vllm:num_requests_waiting')).toBe(false);
    expect(engineAdapter('vllm').parseLoad('')).toEqual({ running: 0, waiting: 0 });
  });
});
