import { mkdtempSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENGINE_KINDS } from '@es/protocol';
import { describe, expect, it } from 'vitest';
import { defaultProxyProcesses, parseTimeLimit } from '@es/scheduler';
import { resolveConfig } from '../src/config.js';
import { errorOf } from './config-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'es-config-'));
function file(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

describe('resolveConfig', () => {
  it('applies the seed defaults to a single deployment from flags', () => {
    const c = resolveConfig(
      { model: 'meta-llama/Llama-3-70B-Instruct', tensorParallelSize: 4, maxNodes: 16 },
      {},
    );
    expect(c.port).toBe(8780);
    expect(c.host).toBe('0.0.0.0');
    expect(c.deployments).toHaveLength(1);
    expect(c.deployments[0]).toMatchObject({
      name: 'Llama-3-70B-Instruct',
      model: 'meta-llama/Llama-3-70B-Instruct',
      engine: 'vllm',
      maxNodes: 16,
      gpusPerNode: 8,
      tensorParallelSize: 4,
      gpuMemoryUtilization: 0.9,
      workerBasePort: 8001,
      routing: 'least-outstanding',
    });
  });

  it('lets flags beat the file and the file beat defaults, reading snake_case keys', () => {
    const path = file('seed.json', {
      model: '/m',
      max_nodes: 4,
      qos: 'lowest',
      port: 9000,
      slurm_extra: '--mem=0; --exclusive',
    });
    const c = resolveConfig({ config: path, maxNodes: 2 }, {});
    expect(c.port).toBe(9000);
    expect(c.deployments[0]).toMatchObject({
      maxNodes: 2,
      qos: 'lowest',
      slurmExtra: ['--mem=0', '--exclusive'],
    });
  });

  it('reads several deployments and rejects duplicate names', () => {
    const ok = file('multi.json', {
      deployments: [{ model: 'a/x' }, { model: 'b/y', engine: 'sglang' }],
    });
    expect(resolveConfig({ config: ok }, {}).deployments.map((d) => [d.name, d.engine])).toEqual([
      ['x', 'vllm'],
      ['y', 'sglang'],
    ]);
    const dup = file('dup.json', { deployments: [{ model: 'a/x' }, { model: 'b/x' }] });
    expect(errorOf(() => resolveConfig({ config: dup }, {})).message).toMatch(
      /two deployments are named "x"/,
    );
  });

  it('names the field, the expectation and the received value for an invalid file', () => {
    const bad = file('bad.json', { model: 'm', deployments: undefined, max_nodes: 'many' });
    const e = errorOf(() => resolveConfig({ config: bad }, {}));
    expect(e.param).toBe('maxNodes');
    expect(e.message).toMatch(/maxNodes: expected number, received "many"/);
    const unknown = file('unknown.json', { model: 'm', max_nodez: 3 });
    expect(errorOf(() => resolveConfig({ config: unknown }, {})).message).toMatch(
      /max_nodez: unknown key; did you mean "max_nodes"\?/,
    );
    const notJson = file('broken.json', '{ "model": ');
    expect(errorOf(() => resolveConfig({ config: notJson }, {})).message).toMatch(/not valid JSON/);
  });

  it('explains a TP size that does not divide the GPUs and a missing model', () => {
    expect(errorOf(() => resolveConfig({ model: 'm', tensorParallelSize: 3 }, {})).message).toMatch(
      /tensor_parallel_size 3 does not divide gpus_per_node 8/,
    );
    expect(errorOf(() => resolveConfig({}, {})).message).toMatch(/--model/);
  });

  it.each([
    // flags → error field (undefined: accepted)
    [{ drainGrace: 20, handoverMargin: 6 }, undefined],
    [{ handoverMargin: 14 }, undefined],
    [{ drainGrace: 4 }, undefined],
    [{ handoverMargin: 15 }, 'handoverMargin'],
    [{ drainGrace: 4, handoverMargin: 5 }, 'handoverMargin'],
    [{ drainGrace: 22 }, 'drainGrace'],
  ])("checks the workers' drain timing %j as the worker would: %s", (flags, field) => {
    if (field === undefined) {
      expect(resolveConfig({ model: 'm', ...flags }, {}).deployments[0]).toMatchObject(flags);
      return;
    }
    const e = errorOf(() => resolveConfig({ model: 'm', ...flags }, {}));
    expect(e.param).toBe(field);
    expect(e.message).toMatch(
      field === 'drainGrace'
        ? /KillWait/
        : /--handover-margin \(\d+\) must be >= 0 and shorter than --drain-grace/,
    );
    expect(e.message).toContain('(deployment "m"');
  });

  it('reads drain_grace and handover_margin per deployment from a file', () => {
    const path = file('graces.json', {
      deployments: [
        { model: 'a/x', drain_grace: 10, handover_margin: 2 },
        { model: 'b/y', handover_margin: 12 },
      ],
    });
    const [x, y] = resolveConfig({ config: path }, {}).deployments;
    expect([x?.drainGrace, x?.handoverMargin, y?.drainGrace, y?.handoverMargin]).toEqual([
      10,
      2,
      undefined,
      12,
    ]);
  });

  it('sets continuation limits from flags or a file, and names the field when wrong', () => {
    expect(resolveConfig({ model: 'm' }, {})).toMatchObject({
      maxContinuations: 3,
      stallTimeoutS: 30,
    });
    expect(resolveConfig({ model: 'm', maxContinuations: 0, stallTimeout: 2.5 }, {})).toMatchObject(
      { maxContinuations: 0, stallTimeoutS: 2.5 },
    );
    const path = file('continuation.json', { model: 'm', max_continuations: 5, stall_timeout: 0 });
    expect(resolveConfig({ config: path }, {})).toMatchObject({
      maxContinuations: 5,
      stallTimeoutS: 0,
    });
    expect(errorOf(() => resolveConfig({ model: 'm', maxContinuations: 1.5 }, {})).message).toMatch(
      /maxContinuations|max_continuations/,
    );
    expect(errorOf(() => resolveConfig({ model: 'm', stallTimeout: -1 }, {})).message).toMatch(
      /stallTimeout|stall_timeout/,
    );
  });

  it('releases requeued jobs unless --no-release-requeued or release_requeued: false says not to', async () => {
    const { parseFlags } = await import('../src/flags.js');
    expect(resolveConfig({ model: 'm' }, {})).toMatchObject({ releaseRequeued: true });
    const off = await parseFlags(['--model', 'm', '--no-release-requeued']);
    expect(off).toMatchObject({ releaseRequeued: false });
    expect(resolveConfig(off, {})).toMatchObject({ releaseRequeued: false });
    const path = file('release.json', { model: 'm', release_requeued: false });
    expect(resolveConfig({ config: path }, {})).toMatchObject({ releaseRequeued: false });
    expect(
      errorOf(() =>
        resolveConfig({ config: file('bad.json', { model: 'm', release_requeued: 'no' }) }, {}),
      ).message,
    ).toMatch(/releaseRequeued|release_requeued/);
  });

  it('scales with demand from --min-nodes and the scaling flags, or the same keys in a file', async () => {
    const { parseFlags } = await import('../src/flags.js');
    const { toDeploymentConfig } = await import('@es/scheduler');
    // Greedy by default: no minNodes, no policy.
    const greedy = resolveConfig({ model: 'm', maxNodes: 4 }, {}).deployments[0]!;
    expect(greedy.minNodes).toBeUndefined();
    expect(greedy.scaling).toBeUndefined();
    const flags = await parseFlags([
      ...['--model', 'm', '--max-nodes', '4', '--min-nodes', '0', '--target-in-flight', '16'],
      ...['--target-kv-cache', '0.8', '--scale-window', '10', '--scale-up-delay', '30'],
      ...['--scale-down-delay', '900'],
    ]);
    const d = resolveConfig(flags, {}).deployments[0]!;
    const policy = {
      targetInFlight: 16,
      targetKvCacheUsage: 0.8,
      windowMs: 10_000,
      upDelayMs: 30_000,
      downDelayMs: 900_000,
    };
    expect(d).toMatchObject({ maxNodes: 4, minNodes: 0, scaling: policy });
    expect(toDeploymentConfig(d)).toMatchObject({ minNodes: 0, maxNodes: 4, scaling: policy });
    const path = file('scaling.json', {
      model: 'm',
      max_nodes: 3,
      min_nodes: 1,
      scale_down_delay: 1200,
    });
    expect(resolveConfig({ config: path }, {}).deployments[0]).toMatchObject({
      minNodes: 1,
      scaling: { downDelayMs: 1_200_000 },
    });
  });

  it.each([
    [
      { model: 'm', maxNodes: 2, minNodes: 3 },
      /min_nodes 3 is more than max_nodes 2: lower --min-nodes or raise --max-nodes/,
    ],
    [
      { model: 'm', maxNodes: 2, scaleUpDelay: 10 },
      /--scale-up-delay has no effect without --min-nodes below --max-nodes .* set --min-nodes/,
    ],
    [{ model: 'm', maxNodes: 2, minNodes: 0, targetKvCache: 1.5 }, /targetKvCache|target_kv_cache/],
    [{ model: 'm', maxNodes: 2, minNodes: -1 }, /minNodes|min_nodes/],
  ])('refuses %o, naming the field and the fix', (overrides, message) => {
    expect(errorOf(() => resolveConfig(overrides, {})).message).toMatch(message);
  });

  it('sets the data plane from flags or a file: proxy processes from the cores, a control port of its own', async () => {
    const { parseFlags } = await import('../src/flags.js');
    const cores = availableParallelism();
    expect(resolveConfig({ model: 'm' }, {})).toMatchObject({
      proxyProcesses: Math.max(1, Math.min(4, Math.floor(cores / 2))),
      controlPort: 0,
    });
    expect([1, 2, 3, 4, 8, 9, 64].map((n) => defaultProxyProcesses(n))).toEqual([
      1, 1, 1, 2, 4, 4, 4,
    ]);
    const o = await parseFlags(['--model', 'm', '--proxy-processes', '0', '--control-port', '0']);
    expect(o).toMatchObject({ proxyProcesses: 0, controlPort: 0 });
    expect(resolveConfig(o, {})).toMatchObject({ proxyProcesses: 0 });
    const path = file('data-plane.json', { model: 'm', proxy_processes: 3, control_port: 9781 });
    expect(resolveConfig({ config: path }, {})).toMatchObject({
      proxyProcesses: 3,
      controlPort: 9781,
    });
    const wrong = (cli: Parameters<typeof resolveConfig>[0]) =>
      errorOf(() => resolveConfig(cli, {}));
    expect(wrong({ model: 'm', proxyProcesses: -1 }).message).toMatch(/proxyProcesses/);
    expect(wrong({ model: 'm', proxyProcesses: 1.5 }).message).toMatch(/proxyProcesses/);
    expect(wrong({ model: 'm', controlPort: 8780 })).toMatchObject({
      param: 'controlPort',
      message: expect.stringMatching(
        /--control-port \(control_port\) 8780 is --port too.*0 for any free port/,
      ),
    });
    expect(wrong({ model: 'm', controlPort: 9000, workerPort: 9000 }).message).toMatch(
      /--control-port \(control_port\) 9000 is --worker-port too/,
    );
    expect(wrong({ model: 'm', controlPort: 9000, proxyProcesses: 0 })).toMatchObject({
      param: 'controlPort',
      message: expect.stringMatching(
        /with --proxy-processes \(proxy_processes\) 0.*leave --control-port out/,
      ),
    });
  });

  it('reads CORS origins from repeated flags or a file (string or list), off by default', async () => {
    const { parseFlags } = await import('../src/flags.js');
    expect(resolveConfig({ model: 'm' }, {}).corsOrigins).toEqual([]);
    const flags = await parseFlags([
      '--model',
      'm',
      '--cors-origin',
      '*',
      '--cors-origin',
      'HTTP://LocalHost:8888',
    ]);
    expect(resolveConfig(flags, {}).corsOrigins).toEqual(['*', 'http://localhost:8888']);
    const one = file('cors-one.json', { model: 'm', cors_origin: 'https://nb.example.org:443' });
    expect(resolveConfig({ config: one }, {}).corsOrigins).toEqual(['https://nb.example.org']);
    const list = file('cors-list.json', { model: 'm', cors_origin: ['http://a.test', '*'] });
    expect(resolveConfig({ config: list }, {}).corsOrigins).toEqual(['http://a.test', '*']);
    const bad = errorOf(() => resolveConfig({ model: 'm', corsOrigin: ['http://a.test/x'] }, {}));
    expect(bad.param).toBe('corsOrigin');
    expect(bad.message).toMatch(
      /--cors-origin \(cors_origin\): CORS origin "http:\/\/a.test\/x" is not an origin/,
    );
  });

  it('defaults the local backend to loopback and the mock engine', () => {
    const c = resolveConfig({ backend: 'local', model: 'mock-model' }, { ES_API_KEY: 'k1,k2' });
    expect(c.host).toBe('127.0.0.1');
    expect(c.deployments[0]?.engine).toBe('mock');
    expect(c.apiKeys).toEqual(['k1', 'k2']);
  });
});

describe('parseTimeLimit', () => {
  it.each([
    ['90', 90],
    ['4:00:00', 240],
    ['1-00:00:00', 1440],
    ['1-2', 1560],
    ['0:30', 1],
    [45, 45],
  ] as const)('%s → %i minutes', (input, minutes) => {
    expect(parseTimeLimit(input)).toBe(minutes);
  });
  it('rejects garbage', () => {
    expect(() => parseTimeLimit('4h')).toThrow(/HH:MM:SS/);
  });
});

describe('parseFlags', () => {
  it('maps the seed flags to overrides, leaving unset flags out', async () => {
    const { parseFlags } = await import('../src/flags.js');
    const o = await parseFlags([
      '--model',
      'm',
      '--tensor-parallel-size',
      '4',
      '--max-nodes',
      '16',
      '--slurm-extra=--mem=0;--x',
      '--api-key',
      'a',
      '--api-key',
      'b',
      '--heartbeat-timeout',
      '12.5',
      '--drain-grace',
      '12',
      '--handover-margin',
      '4',
      '--max-continuations',
      '2',
      '--stall-timeout',
      '10',
    ]);
    expect(o).toEqual({
      model: 'm',
      tensorParallelSize: 4,
      maxNodes: 16,
      slurmExtra: '--mem=0;--x',
      apiKey: ['a', 'b'],
      heartbeatTimeout: 12.5,
      drainGrace: 12,
      handoverMargin: 4,
      maxContinuations: 2,
      stallTimeout: 10,
    });
    await expect(parseFlags(['--model', 'm', '--max-nodez', '3'])).rejects.toThrow(
      /Unknown argument: max-nodez \(/,
    );
    await expect(parseFlags(['--engine', 'tgi'])).rejects.toThrow(/Invalid values:[\s\S]*engine/);
    const c = resolveConfig(o, {});
    expect(c.apiKeys).toEqual(['a', 'b']);
  });
});

describe('engines', () => {
  it('takes every engine of the protocol and nothing else, from flags and from a file', async () => {
    const { parseFlags } = await import('../src/flags.js');
    for (const engine of ENGINE_KINDS) {
      expect((await parseFlags(['--model', 'm', '--engine', engine])).engine).toBe(engine);
      const c = resolveConfig(
        { config: file(`engine-${engine}.json`, { model: 'm', engine }) },
        {},
      );
      expect(c.deployments[0]?.engine).toBe(engine);
    }
    const bad = errorOf(() =>
      resolveConfig({ config: file('engine-tgi.json', { model: 'm', engine: 'tgi' }) }, {}),
    );
    expect(bad.message).toMatch(/engine/);
  });
});

describe('examples/', () => {
  it('ships an 8×H200 lowest-priority config that validates', () => {
    const c = resolveConfig(
      { config: new URL('../../../examples/h200-lowest.json', import.meta.url).pathname },
      {},
    );
    expect(c.backend).toBe('slurm');
    expect(c.deployments[0]).toMatchObject({
      qos: 'h200_lowest',
      maxNodes: 16,
      tensorParallelSize: 4,
      timeLimitMinutes: 1440,
    });
  });
});
