import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { engineAdapter, mockEngineCliPath, parsePrometheus, splitArgs } from '../src/index.js';
import type { EngineSpec } from '../src/index.js';
import { parseEngineVersion, vllmAcceptsDisableLogRequests } from '../src/engines.js';

const base: EngineSpec = {
  engine: 'vllm',
  model: 'openai/gpt-oss-120b',
  host: '10.0.0.5',
  port: 8002,
  gpus: [4, 5, 6, 7],
  tensorParallelSize: 4,
  gpuMemoryUtilization: 0.9,
};

describe('engine argv', () => {
  it('vllm: serve <model> with the required flags and --trust-remote-code only', () => {
    expect(engineAdapter('vllm').command(base)).toEqual({
      command: 'vllm',
      args: [
        'serve',
        'openai/gpt-oss-120b',
        '--host',
        '10.0.0.5',
        '--port',
        '8002',
        '--tensor-parallel-size',
        '4',
        '--gpu-memory-utilization',
        '0.9',
        '--trust-remote-code',
      ],
      env: { CUDA_VISIBLE_DEVICES: '4,5,6,7' },
    });
  });

  it('vllm: optional flags, then extra args kept as single words', () => {
    const { args } = engineAdapter('vllm').command({
      ...base,
      maxModelLen: 32768,
      servedModelName: 'gpt-oss',
      apiKey: 'secret-key',
      extraArgs: splitArgs(`--chat-template "/models/my template.jinja" --override '{"a": 1}'`),
    });
    expect(args.slice(10)).toEqual([
      '--max-model-len',
      '32768',
      '--served-model-name',
      'gpt-oss',
      '--api-key',
      'secret-key',
      '--trust-remote-code',
      '--chat-template',
      '/models/my template.jinja',
      '--override',
      '{"a": 1}',
    ]);
  });

  it('sglang: python -m sglang.launch_server with its own flag names', () => {
    const command = engineAdapter('sglang').command({
      ...base,
      engine: 'sglang',
      maxModelLen: 8192,
      servedModelName: 'm',
      apiKey: 'k',
      extraArgs: ['--attention-backend', 'fa3'],
    });
    expect(command).toEqual({
      command: 'python',
      args: [
        '-m',
        'sglang.launch_server',
        '--model-path',
        'openai/gpt-oss-120b',
        '--host',
        '10.0.0.5',
        '--port',
        '8002',
        '--tp-size',
        '4',
        '--mem-fraction-static',
        '0.9',
        '--context-length',
        '8192',
        '--served-model-name',
        'm',
        '--api-key',
        'k',
        '--trust-remote-code',
        '--enable-metrics',
        '--attention-backend',
        'fa3',
      ],
      env: { CUDA_VISIBLE_DEVICES: '4,5,6,7' },
    });
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

  it("mock: the mock engine's CLI under this Node, with vLLM's flags", () => {
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
      '--model',
      'openai/gpt-oss-120b',
      '--host',
      '10.0.0.5',
      '--port',
      '8002',
      '--served-model-name',
      'm',
      '--api-key',
      'k',
      '--load-delay',
      '500',
    ]);
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

  it('vllm asks `vllm --version` (or the engine binary) unless the extra args decide the logging', () => {
    const vllm = engineAdapter('vllm');
    expect(vllm.versionCommand?.({})).toEqual({ command: 'vllm', args: ['--version'], env: {} });
    expect(vllm.versionCommand?.({ engineBin: '/opt/venv/bin/vllm' })?.command).toBe(
      '/opt/venv/bin/vllm',
    );
    expect(vllm.versionCommand?.({ extraArgs: ['--enable-log-requests'] })).toBeUndefined();
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
