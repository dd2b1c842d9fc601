import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { workerArgs } from '@es/scheduler';
import { errorOf } from './config-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'es-config-security-'));
let n = 0;
function file(content: unknown, mode = 0o600): string {
  const path = join(dir, `file-${++n}`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  chmodSync(path, mode);
  return path;
}

describe('names that reach a command line', () => {
  const ATTACK = '--engine-bin=/bin/sh';
  const REFUSED =
    '--served-model-name "--engine-bin=/bin/sh" starts with "-": a name cannot (a command line would read it as a flag)';

  it('refuses a served model name that is a flag, given as a flag', async () => {
    const flags = await parseFlags(['--model', 'm', `--served-model-name=${ATTACK}`]);
    expect(flags.servedModelName).toBe(ATTACK);
    const error = errorOf(() => resolveConfig(flags, {}));
    expect(error.param).toBe('servedModelName');
    expect(error.message).toContain(REFUSED);
    expect(error.message).toContain(
      '(deployment "sh": --served-model-name or "served_model_name" in the config file)',
    );
    // The two-word form never gets that far: the flag it hides is not one of the scheduler's.
    await expect(parseFlags(['--model', 'm', '--served-model-name', ATTACK])).rejects.toThrow(
      /Unknown argument: engine-bin/,
    );
  });

  it('refuses it from a config file, at the top level and in "deployments"', () => {
    const top = errorOf(() =>
      resolveConfig({ config: file({ model: 'm', served_model_name: ATTACK }) }, {}),
    );
    expect(top).toMatchObject({ param: 'servedModelName' });
    expect(top.message).toContain(REFUSED);
    const listed = errorOf(() =>
      resolveConfig(
        { config: file({ deployments: [{ name: 'a', model: 'm', servedModelName: ATTACK }] }) },
        {},
      ),
    );
    expect(listed.message).toContain(REFUSED);
  });

  it.each([
    [{ model: '-m' }, 'model', '--model "-m" starts with "-"'],
    [
      { model: 'org/m\n#SBATCH --qos=high' },
      'model',
      '--model "org/m\\n#SBATCH --qos=high" contains a control character',
    ],
    [{ model: 'm', served_model_name: 'a\rb' }, 'servedModelName', 'contains a control character'],
    [
      { model: 'm', engine_extra_args: '--x 1\nrm -rf ~' },
      'engineExtraArgs',
      '--engine-extra-args "--x 1\\nrm -rf ~" contains a control character',
    ],
    [{ model: 'm', venv_path: '/v\n/x' }, 'venvPath', 'contains a control character'],
    [{ model: 'm', venv_path: '-x' }, 'venvPath', '--venv-path "-x" starts with "-"'],
    [
      { model: 'm', conda_env: 'env; rm -rf ~' },
      'condaEnv',
      '--conda-env "env; rm -rf ~" is not a conda environment',
    ],
    [{ model: 'm', conda_env: '--prefix=/x' }, 'condaEnv', 'is not a conda environment'],
  ])('refuses %j, naming the flag and the key', (fields, field, message) => {
    const error = errorOf(() => resolveConfig({ config: file(fields) }, {}));
    expect(error.param).toBe(field);
    expect(error.message).toContain(message);
  });

  it('accepts ordinary names, paths and engine arguments, and passes each as one --flag=value word', () => {
    const c = resolveConfig(
      {
        config: file({
          model: '/models/Llama 3 (70B)',
          served_model_name: 'llama-3',
          conda_env: 'vllm-0.10',
          engine_extra_args: '--max-num-seqs 256 --override-generation-config \'{"a": 1}\'',
        }),
      },
      {},
    );
    const d = c.deployments[0];
    if (d === undefined) throw new Error('no deployment');
    expect(
      resolveConfig({ model: 'm', condaEnv: '/opt/envs/vllm' }, {}).deployments[0]?.condaEnv,
    ).toBe('/opt/envs/vllm');
    const argv = workerArgs(d, {
      schedulerUrl: 'http://s:1',
      secretFile: '/s',
      logDir: '/l',
      workerCommand: ['node', 'cli.mjs'],
      anyPort: false,
    }).slice(2);
    expect(argv.every((word) => word.startsWith('--') && word.includes('='))).toBe(true);
    expect(argv).toContain('--model=/models/Llama 3 (70B)');
    expect(argv).toContain('--served-model-name=llama-3');
  });
});

describe('client and admin keys kept out of ps', () => {
  it('reads client keys from --api-key-file (one per line, # comments) and ES_API_KEYS, with --api-key', async () => {
    const keys = file('# clients of team A\nk-file-1\n\nk-file-2\n');
    const flags = await parseFlags(['--model', 'm', '--api-key-file', keys, '--api-key', 'k-flag']);
    expect(flags.apiKeyFile).toEqual([keys]);
    const c = resolveConfig(flags, { ES_API_KEYS: 'k-env-1, k-env-2', ES_API_KEY: 'k-env-3' });
    expect(c.apiKeys).toEqual(['k-flag', 'k-file-1', 'k-file-2', 'k-env-1', 'k-env-2', 'k-env-3']);
    const fromConfig = resolveConfig({ config: file({ model: 'm', api_key_file: keys }) }, {});
    expect(fromConfig.apiKeys).toEqual(['k-file-1', 'k-file-2']);
  });

  it('reads the admin key from --admin-key-file or admin_key_file, else ES_ADMIN_KEY', async () => {
    const admin = file('# admin\nthe-admin-key\n');
    const flags = await parseFlags(['--model', 'm', '--admin-key-file', admin]);
    expect(resolveConfig(flags, { ES_ADMIN_KEY: 'from-env' }).adminKey).toBe('the-admin-key');
    const config = file({ model: 'm', admin_key_file: admin });
    expect(resolveConfig({ config }, {}).adminKey).toBe('the-admin-key');
    expect(resolveConfig({ model: 'm' }, { ES_ADMIN_KEY: 'from-env' }).adminKey).toBe('from-env');
  });

  it.each([
    ['--api-key-file', 'apiKeyFile', (f: string) => ({ model: 'm', apiKeyFile: [f] })],
    ['--admin-key-file', 'adminKeyFile', (f: string) => ({ model: 'm', adminKeyFile: f })],
  ] as const)(
    'refuses a %s that other users can read, naming the flag, the file and the fix',
    (flag, field, flags) => {
      const open = file('k\n', 0o644);
      const error = errorOf(() => resolveConfig(flags(open), {}));
      expect(error.param).toBe(field);
      expect(error.message).toBe(
        `${flag} (${field === 'apiKeyFile' ? 'api_key_file' : 'admin_key_file'}): key file ${open} is readable by other users (mode 644): run chmod 600 ${open}`,
      );
    },
  );

  it('refuses an admin key file with several keys, or given with --admin-key', () => {
    const two = file('a\nb\n');
    expect(errorOf(() => resolveConfig({ model: 'm', adminKeyFile: two }, {})).message).toMatch(
      /holds 2 keys: an admin key file holds one/,
    );
    const one = file('a\n');
    expect(
      errorOf(() => resolveConfig({ model: 'm', adminKeyFile: one, adminKey: 'x' }, {})).message,
    ).toMatch(/both given: pass one of them/);
    expect(
      errorOf(() => resolveConfig({ model: 'm', apiKeyFile: [join(dir, 'missing')] }, {})).message,
    ).toMatch(/^--api-key-file \(api_key_file\): key file .*missing cannot be read \(ENOENT/);
  });
});
