/**
 * The original tool's config files and flag spellings, as its users have them: a file in
 * the exact form its `save_json` writes (every key of its `SchedulerConfig`, in its order,
 * `null` for unset ones, `project_root`, Python's `json.dump(indent=2)` layout), its
 * `--engine-extra-args "--…"` and `--project-root`, and any one of its flags alone.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { closest, heartbeatTiming } from '@es/scheduler';
import { WORKER_CLI_PATH, resolveConfig } from '../src/config.js';
import { joinPassThroughValues, parseFlags } from '../src/flags.js';
import { errorOf, seedConfigText } from './config-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'es-seed-config-'));

function seedFile(name: string, overrides: Record<string, string> = {}): string {
  const path = join(dir, name);
  writeFileSync(path, seedConfigText(overrides));
  return path;
}

/** A directory that is a checkout of this project as far as the node jobs care. */
function fakeCheckout(name: string): string {
  const root = join(dir, name);
  mkdirSync(join(root, 'apps/worker/dist'), { recursive: true });
  writeFileSync(join(root, WORKER_CLI_PATH), '');
  return root;
}

describe('a config file the original wrote', () => {
  it('loads as it is: every key, nulls as unset, its values as the original meant them', () => {
    const c = resolveConfig({ config: seedFile('seed.json') }, {});
    expect(c).toMatchObject({
      port: 8780,
      logDir: 'logs',
      heartbeatTimeoutS: 120,
      healthCheckIntervalS: 30,
      nodeAcquireIntervalS: 15,
    });
    expect(c.deployments).toHaveLength(1);
    const [d] = c.deployments;
    expect(d).toMatchObject({
      name: 'Llama-3-70B-Instruct',
      model: 'meta-llama/Llama-3-70B-Instruct',
      engine: 'vllm',
      qos: 'h200_lowest',
      partition: 'h200',
      account: 'dream',
      maxNodes: 16,
      gpusPerNode: 8,
      tensorParallelSize: 4,
      gpuMemoryUtilization: 0.9,
      timeLimit: '72:00:00',
      timeLimitMinutes: 72 * 60,
      exclusive: true,
      slurmExtra: [],
      engineExtraArgs: '',
      workerBasePort: 8001,
      enablePrefixCaching: true,
    });
    // null and "" are unset: nothing of them reaches the deployment.
    for (const key of ['maxModelLen', 'servedModelName', 'constraint', 'condaEnv']) {
      expect(d).not.toHaveProperty(key);
    }
  });

  it('ignores a project_root that is not a checkout of this project, with a warning', () => {
    const c = resolveConfig({ config: seedFile('python-root.json') }, {});
    expect(c.projectRoot).toBeUndefined();
    expect(c.warnings).toHaveLength(1);
    expect(c.warnings?.[0]).toContain('project_root /home/alice/elastic-serving');
    expect(c.warnings?.[0]).toContain(WORKER_CLI_PATH);
    expect(c.warnings?.[0]).toMatch(/--project-root/);
    // "" (the original's default) is unset, without a warning.
    const empty = resolveConfig(
      { config: seedFile('empty-root.json', { project_root: '""' }) },
      {},
    );
    expect(empty.projectRoot).toBeUndefined();
    expect(empty.warnings).toBeUndefined();
    const none = resolveConfig(
      { config: seedFile('null-root.json', { project_root: 'null' }) },
      {},
    );
    expect(none.warnings).toBeUndefined();
  });

  it('takes project_root (file or --project-root, relative or absolute) as the checkout the node jobs run', () => {
    const root = fakeCheckout('checkout-a');
    const fromFile = resolveConfig(
      { config: seedFile('root.json', { project_root: JSON.stringify(root) }) },
      {},
    );
    expect(fromFile.projectRoot).toBe(root);
    expect(fromFile.warnings).toBeUndefined();
    const other = fakeCheckout('checkout-b');
    const fromFlag = resolveConfig(
      { config: seedFile('root-flag.json'), projectRoot: relative(process.cwd(), other) },
      {},
    );
    expect(fromFlag.projectRoot).toBe(other);
  });

  it('takes "" as unset, as the original wrote its text defaults: a model from the flag', () => {
    const path = seedFile('no-model.json', { model: '""', log_dir: '""' });
    const c = resolveConfig({ config: path, model: 'Qwen/Qwen3-32B' }, {});
    expect(c.deployments[0]?.model).toBe('Qwen/Qwen3-32B');
    expect(c.logDir).toBe('logs');
    expect(errorOf(() => resolveConfig({ config: path }, {})).message).toMatch(
      /no model given. Pass --model/,
    );
  });

  it('reads the values a user set where the original wrote them', () => {
    const c = resolveConfig(
      {
        config: seedFile('set.json', {
          max_model_len: '32768',
          served_model_name: '"llama"',
          engine_extra_args: '"--max-num-seqs 256"',
          slurm_extra: '"--mem=0;--signal=B:USR1@60"',
          constraint: '"h200"',
          conda_env: '"vllm"',
          exclusive: 'false',
        }),
      },
      {},
    );
    expect(c.deployments[0]).toMatchObject({
      name: 'llama',
      maxModelLen: 32768,
      servedModelName: 'llama',
      engineExtraArgs: '--max-num-seqs 256',
      slurmExtra: ['--mem=0', '--signal=B:USR1@60'],
      constraint: 'h200',
      condaEnv: 'vllm',
      exclusive: false,
    });
  });

  it.each([
    ['vllm', '--max-num-seqs 256 --no-enable-prefix-caching'],
    ['sglang', '--max-num-seqs 256 --disable-radix-cache'],
    ['mock', '--max-num-seqs 256'],
  ])('enable_prefix_caching: false turns the %s prefix cache off', (engine, args) => {
    const off = resolveConfig(
      {
        config: seedFile(`cache-${engine}.json`, {
          engine: JSON.stringify(engine),
          enable_prefix_caching: 'false',
          engine_extra_args: '"--max-num-seqs 256"',
        }),
      },
      {},
    );
    expect(off.deployments[0]?.engineExtraArgs).toBe(args);
  });

  it('names an unknown key and the closest known one, in the spelling the file uses', () => {
    const typo = errorOf(() =>
      resolveConfig({ config: seedFile('typo.json', { max_nodes: '16, "max_nodez": 3' }) }, {}),
    );
    expect(typo.message).toContain('max_nodez: unknown key; did you mean "max_nodes"?');
    expect(typo.param).toBe('max_nodez');
    const camelPath = join(dir, 'camel.json');
    writeFileSync(camelPath, JSON.stringify({ model: 'm', tensorParalelSize: 2 }));
    expect(errorOf(() => resolveConfig({ config: camelPath }, {})).message).toContain(
      'tensorParalelSize: unknown key; did you mean "tensorParallelSize"?',
    );
    const nested = join(dir, 'nested.json');
    writeFileSync(nested, JSON.stringify({ deployments: [{ model: 'm', condaenv: 'x' }] }));
    const inDeployment = errorOf(() => resolveConfig({ config: nested }, {}));
    expect(inDeployment.message).toContain(
      'deployments.0.condaenv: unknown key; did you mean "conda_env"?',
    );
    const far = join(dir, 'far.json');
    writeFileSync(far, JSON.stringify({ model: 'm', colour: 'blue' }));
    const unrelated = errorOf(() => resolveConfig({ config: far }, {}));
    expect(unrelated.message).toContain('colour: unknown key');
    expect(unrelated.message).not.toContain('did you mean');
  });
});

describe("the original's flags", () => {
  it('takes the word after --engine-extra-args and --slurm-extra as the value, as the seed did', async () => {
    const o = await parseFlags([
      '--model',
      'm',
      '--engine-extra-args',
      '--max-num-seqs 256',
      '--slurm-extra',
      '--mem=0;--exclusive',
      '--project-root',
      '/srv/es',
    ]);
    expect(o).toEqual({
      model: 'm',
      engineExtraArgs: '--max-num-seqs 256',
      slurmExtra: '--mem=0;--exclusive',
      projectRoot: '/srv/es',
    });
    // The = form still works; a value that is itself a flag name is still only a value.
    expect(await parseFlags(['--engine-extra-args=--enforce-eager'])).toEqual({
      engineExtraArgs: '--enforce-eager',
    });
    expect(await parseFlags(['--engine-extra-args', '--model', '--model', 'x'])).toEqual({
      engineExtraArgs: '--model',
      model: 'x',
    });
    expect(
      joinPassThroughValues(['--slurm-extra', '-p x', '--', '--engine-extra-args', 'y']),
    ).toEqual(['--slurm-extra=-p x', '--', '--engine-extra-args', 'y']);
  });

  it('still refuses unknown flags around them, naming the closest flag', async () => {
    await expect(
      parseFlags(['--engine-extra-args', '--enforce-eager', '--max-nodez', '3']),
    ).rejects.toThrow(
      'Unknown argument: max-nodez (did you mean --max-nodes?). Run scripts/es-scheduler --help for the list of flags.',
    );
    await expect(parseFlags(['--model', 'm', '--wibble'])).rejects.toThrow(
      /Unknown argument: wibble \(a value that starts with "-" needs the --flag=value form/,
    );
  });

  it.each([
    ['--model', 'meta-llama/Llama-3-8B-Instruct'],
    ['--engine', 'sglang'],
    ['--qos', 'h200_lowest'],
    ['--partition', 'h200'],
    ['--account', 'dream'],
    ['--max-nodes', '16'],
    ['--gpus-per-node', '8'],
    ['--tensor-parallel-size', '4'],
    ['--gpu-memory-utilization', '0.9'],
    ['--max-model-len', '32768'],
    ['--served-model-name', 'llama'],
    ['--engine-extra-args', '--max-num-seqs 256'],
    ['--time-limit', '72:00:00'],
    ['--constraint', 'h200'],
    ['--slurm-extra', '--mem=0'],
    ['--port', '8780'],
    ['--worker-base-port', '8001'],
    ['--heartbeat-timeout', '120'],
    ['--heartbeat-timeout', '10'],
    ['--health-check-interval', '30'],
    ['--health-check-interval', '60'],
    ['--node-acquire-interval', '15'],
    ['--conda-env', 'vllm'],
    ['--project-root', '/home/alice/elastic-serving'],
    ['--log-dir', 'logs'],
    ['--host', '0.0.0.0'],
  ])('%s %s works alone (with the model the seed requires)', async (flag, value) => {
    const argv = flag === '--model' ? [flag, value] : ['--model', 'm', flag, value];
    const settings = resolveConfig(await parseFlags(argv), {});
    expect(settings.heartbeatTimeoutS).toBeGreaterThan(settings.healthCheckIntervalS);
  });
});

describe('heartbeat timing', () => {
  it.each([
    // interval, timeout → interval, timeout
    [undefined, undefined, 5, 30],
    [30, undefined, 30, 90],
    [2, undefined, 2, 30],
    [1, 4, 1, 4],
    [undefined, 60, 5, 60],
    [undefined, 6, 2, 6],
  ])('interval %s, timeout %s → %s s, %s s', (interval, timeout, i, t) => {
    expect(heartbeatTiming(interval, timeout)).toEqual({
      healthCheckIntervalS: i,
      heartbeatTimeoutS: t,
    });
  });

  it('refuses a timeout not longer than the interval, naming both flags and the fix', () => {
    const e = errorOf(() => heartbeatTiming(30, 20));
    expect(e.param).toBe('heartbeatTimeout');
    expect(e.message).toMatch(/--heartbeat-timeout \(heartbeat_timeout\) 20s/);
    expect(e.message).toMatch(/--health-check-interval \(health_check_interval\) 30s/);
    expect(e.message).toMatch(/leave it out/);
    // A seed file's timeout against a flag's interval is the same conflict.
    expect(
      errorOf(() =>
        resolveConfig({ config: seedFile('timing.json'), healthCheckInterval: 200 }, {}),
      ).message,
    ).toMatch(/heartbeat_timeout\) 120s must be longer/);
  });
});

describe('closest', () => {
  it.each([
    ['max_nodez', 'max_nodes'],
    ['tensor_paralel_size', 'tensor_parallel_size'],
    ['colour', undefined],
  ])('%s → %s', (name, expected) => {
    expect(closest(name, ['max_nodes', 'tensor_parallel_size', 'model', 'port', 'log_dir'])).toBe(
      expected,
    );
  });
});
