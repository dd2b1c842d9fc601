/**
 * The first hour of a user of the original tool, end to end: the built scheduler started
 * from a config file in the exact form the original writes (local backend, mock engine)
 * serves `/v1` with the checkout its `project_root` names; and every scheduler command the
 * README, `--help` and the error messages print works as printed from the repository root
 * after the README's two set-up commands.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { descendants, killStartedSchedulers, startSchedulerProcess, waitFor } from './harness.js';
import { seedConfigText } from './config-fixtures.js';
// What the engine answers (this app's package.json is not ours to change, so the source).
import { expectedGeneration } from '../../../packages/mock-engine/src/index.js';

const execFileP = promisify(execFile);
const root = resolve(import.meta.dirname, '../../..');
const dir = mkdtempSync(join(tmpdir(), 'es-seed-parity-'));

afterAll(async () => {
  await killStartedSchedulers();
});

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `command` with bash from the repository root, as a user types it there. */
async function sh(command: string, timeout = 60_000): Promise<Ran> {
  try {
    const { stdout, stderr } = await execFileP('bash', ['-c', command], { cwd: root, timeout });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
    };
  }
}

/** The argv bash makes of `command`'s arguments (quotes, backslash-newlines and all). */
async function argvOf(command: string): Promise<string[]> {
  const words = command.replace(/^scripts\/es-scheduler/, '');
  const { stdout } = await execFileP('bash', ['-c', `printf '%s\\0' ${words}`], { cwd: root });
  return stdout.split('\0').slice(0, -1);
}

/** The scheduler commands of a text: lines (with `\` continuations joined) that start with it. */
function schedulerCommands(text: string): string[] {
  return text
    .replace(/\\\n\s*/g, '')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('scripts/es-scheduler'));
}

/** Every command of the README's shell blocks that starts the scheduler through its wrapper. */
function readmeSchedulerCommands(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
  return blocks.flatMap(schedulerCommands);
}

/** A command that would start serving: its words, as bash makes them, are valid settings. */
async function expectValidFlags(command: string): Promise<void> {
  const argv = (await argvOf(command)).map((word, i, all) =>
    // A relative --config is relative to the repository root, where the command is run.
    all[i - 1] === '--config' ? join(root, word) : word,
  );
  const settings = resolveConfig(await parseFlags(argv), {});
  expect(settings.deployments.length, command).toBeGreaterThanOrEqual(1);
}

/**
 * The built scheduler started from a file in the original's form (one mock engine per
 * node, fast checks) whose `project_root` is `projectRoot`; resolves once its worker is
 * ready. The file says engine "vllm" (the original knew no other): the mock engine stands
 * in, from the command line.
 */
async function startFromSeedFile(name: string, projectRoot: string) {
  const config = join(dir, `${name}.json`);
  writeFileSync(
    config,
    seedConfigText({
      model: '"mock-model"',
      max_nodes: '1',
      tensor_parallel_size: '8',
      health_check_interval: '1.0',
      node_acquire_interval: '1.0',
      project_root: JSON.stringify(projectRoot),
    }),
  );
  const scheduler = await startSchedulerProcess({
    args: ['--config', config, '--backend', 'local', '--engine', 'mock'],
    logDir: join(dir, `logs-${name}`),
  });
  const status = await waitFor(
    'the one worker ready',
    () => scheduler.clusterStatus(),
    (s) => s.ready_workers === 1,
    30_000,
  );
  return { scheduler, status };
}

describe('a config file the original wrote', () => {
  it('starts the scheduler as it is and serves /v1 with the checkout project_root names', async () => {
    // A checkout of this project at another path: the node jobs must run its worker.
    const checkout = join(dir, 'checkout');
    mkdirSync(join(checkout, 'apps/worker'), { recursive: true });
    symlinkSync(join(root, 'apps/worker/dist'), join(checkout, 'apps/worker/dist'));
    const { scheduler, status } = await startFromSeedFile('checkout', checkout);
    expect(status).toMatchObject({ model: 'mock-model', max_nodes: 1, tensor_parallel_size: 8 });
    expect(scheduler.logs.filter((l) => l.msg.includes('project_root'))).toEqual([]);

    const workers = descendants(scheduler.pid)
      .map((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
        } catch {
          return '';
        }
      })
      .filter((args) => args.includes('apps/worker/dist/cli.mjs'));
    expect(workers.length).toBeGreaterThan(0);
    for (const args of workers) expect(args).toContain(join(checkout, 'apps/worker/dist/cli.mjs'));

    const client = new OpenAI({ baseURL: `${scheduler.url}/v1`, apiKey: 'EMPTY', maxRetries: 0 });
    const chat = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 5,
    });
    expect(chat.choices[0]?.message.content).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'Hello!' }] },
        { maxTokens: 5 },
      ).text,
    );
    await scheduler.stop('SIGTERM', 20_000);
  }, 90_000);

  it("starts with the original's own checkout in project_root, warning that it is ignored", async () => {
    const python = join(dir, 'elastic-serving-python');
    const { scheduler } = await startFromSeedFile('python-root', python);
    const warnings = scheduler.logs.filter((l) => l.msg.includes('project_root'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.level).toBe(40);
    expect(warnings[0]?.msg).toContain(`project_root ${python} holds no apps/worker/dist/cli.mjs`);
    await scheduler.stop('SIGTERM', 20_000);
  }, 90_000);
});

describe('every scheduler command the docs, --help and errors print works as printed', () => {
  it('the README prints scripts/es-scheduler commands that run from the repository root', async () => {
    const commands = readmeSchedulerCommands();
    expect(commands).toContain('scripts/es-scheduler --help');
    expect(commands.length).toBeGreaterThanOrEqual(2);
    for (const command of commands) {
      if (command.includes('--help')) {
        const help = await sh(command);
        expect(help.code, `${command}: ${help.stderr}`).toBe(0);
        expect(help.stdout).toContain('scripts/es-scheduler [options]');
        expect(help.stdout).toContain('--project-root');
        expect(help.stdout.replace(/\s+/g, ' ')).toContain('max(30, 3 × --health-check-interval)');
        continue;
      }
      await expectValidFlags(command);
    }
  });

  it('--help prints examples that run as printed, none wider than 80 columns', async () => {
    const help = await sh('scripts/es-scheduler --help');
    expect(help.code).toBe(0);
    const examples = help.stdout.slice(help.stdout.indexOf('Examples:'));
    const commands = schedulerCommands(examples);
    expect(commands).toHaveLength(5);
    expect(commands).toContain(
      'scripts/es-scheduler --model meta-llama/Llama-3-8B-Instruct --engine-extra-args "--max-num-seqs 256"',
    );
    for (const line of examples.split('\n')) expect(line.length, line).toBeLessThanOrEqual(80);
    for (const command of commands) await expectValidFlags(command);
  });

  it('the README no longer tells users to run a command that is not on PATH', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const blocks = [...readme.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
    for (const block of blocks) expect(block).not.toMatch(/^\s*es-scheduler\b/m);
  });

  it("the error hint's command works as printed", async () => {
    const bad = await sh('scripts/es-scheduler --max-nodez 3');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('Unknown argument: max-nodez (did you mean --max-nodes?)');
    const hint = /Run (.+?) for the list of flags/.exec(bad.stderr)?.[1];
    expect(hint).toBe('scripts/es-scheduler --help');
    const help = await sh(hint as string);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--engine-extra-args');
  });

  it('the seed form of --engine-extra-args gets past the flag check of the real binary', async () => {
    // Serving would start a job; a config error after the flags shows they were accepted.
    const ran = await sh(
      'scripts/es-scheduler --engine-extra-args "--max-num-seqs 256" --health-check-interval 30 --tensor-parallel-size 3 --model m',
    );
    expect(ran.code).toBe(2);
    expect(ran.stderr).toContain('tensor_parallel_size 3 does not divide gpus_per_node 8');
  });
});
