import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run pnpm build first`);
});

/** Runs the built es-worker to its exit: its code and what it printed. */
function runWorker(args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, SLURM_JOB_ID: '31', SLURM_RESTART_COUNT: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

/** An engine executable that records that it ran (and its argv) in `dir/ran`. */
function recordingEngine(dir: string): { bin: string; ran: string } {
  const bin = join(dir, 'engine');
  const ran = join(dir, 'ran');
  writeFileSync(bin, `#!/bin/sh\nprintf '%s\\n' "$@" >> '${ran}'\nsleep 30\n`);
  chmodSync(bin, 0o700);
  return { bin, ran };
}

describe('es-worker (built binary): names that would become flags, and its log directory', () => {
  it('refuses --served-model-name=--engine-bin=/bin/sh with exit 2 before any engine starts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-names-'));
    const engine = recordingEngine(dir);
    const { code, output } = await runWorker([
      '--scheduler-url=http://127.0.0.1:9',
      '--engine=mock',
      `--engine-bin=${engine.bin}`,
      '--model=m',
      '--served-model-name=--engine-bin=/bin/sh',
      '--base-port=0',
      `--log-dir=${join(dir, 'logs')}`,
    ]);
    expect(code).toBe(2);
    expect(output).toContain(
      'es-worker: --served-model-name "--engine-bin=/bin/sh" starts with "-": a name cannot',
    );
    expect(existsSync(engine.ran)).toBe(false);
  });

  it('refuses a --log-dir open to other users, naming it, its mode and the fix; creates a missing one 0700', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-worker-logdir-'));
    const engine = recordingEngine(dir);
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o755);
    const common = [
      '--scheduler-url=http://127.0.0.1:9',
      '--engine=mock',
      '--model=m',
      '--base-port=0',
    ];
    const refused = await runWorker([...common, `--engine-bin=${engine.bin}`, `--log-dir=${open}`]);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain(
      `es-worker: --log-dir ${open} is open to other users (mode 755): run chmod 700 ${open}, or pass another --log-dir`,
    );
    expect(existsSync(engine.ran)).toBe(false);
    // A missing one is made owner-only before anything is written in it (the worker then
    // fails on the unreachable scheduler, which is not what this test is about).
    const made = join(dir, 'made', 'logs');
    const child = spawn(
      process.execPath,
      // An engine that exits at once: nothing is left running once the worker is killed.
      [CLI, ...common, '--engine-bin=/bin/true', `--log-dir=${made}`],
      {
        env: { ...process.env, SLURM_JOB_ID: '32' },
        stdio: 'ignore',
      },
    );
    await expect.poll(() => existsSync(made), { timeout: 10_000 }).toBe(true);
    child.kill('SIGKILL');
    expect(statSync(made).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'made')).mode & 0o777).toBe(0o700);
  });
});
