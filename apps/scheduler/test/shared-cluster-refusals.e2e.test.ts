/**
 * What es-scheduler refuses at start-up on a shared cluster, run as the built binary: a log
 * directory other users can enter, a served model name that would become an es-worker flag,
 * a key file other users can read. Each is a usage error (exit 2) naming the flag and the fix.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSchedulerToExit } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'es-sched-refusals-'));
const LOCAL = ['--backend', 'local', '--engine', 'mock', '--model', 'mock-model', '--port', '0'];

describe('es-scheduler refuses, exit 2', () => {
  it('a --log-dir open to other users, naming it, its mode and the fix; and writes nothing in it', async () => {
    const logs = join(dir, 'open-logs');
    mkdirSync(logs);
    chmodSync(logs, 0o755);
    const result = await runSchedulerToExit([...LOCAL, '--log-dir', logs]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      `es-scheduler: --log-dir ${logs} is open to other users (mode 755): run chmod 700 ${logs}, or pass another --log-dir (log_dir)\n`,
    );
    expect(existsSync(join(logs, 'secret'))).toBe(false);
  });

  it('--served-model-name=--engine-bin=/bin/sh, before any job is submitted', async () => {
    const logs = join(dir, 'name-logs');
    const result = await runSchedulerToExit([
      ...LOCAL,
      '--log-dir',
      logs,
      '--served-model-name=--engine-bin=/bin/sh',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      'es-scheduler: --served-model-name "--engine-bin=/bin/sh" starts with "-": a name cannot',
    );
    expect(existsSync(logs)).toBe(false);
  });

  it('an --api-key-file other users can read', async () => {
    const keys = join(dir, 'keys');
    writeFileSync(keys, 'k1\n');
    chmodSync(keys, 0o644);
    const result = await runSchedulerToExit([
      ...LOCAL,
      '--log-dir',
      join(dir, 'key-logs'),
      '--api-key-file',
      keys,
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      `es-scheduler: --api-key-file (api_key_file): key file ${keys} is readable by other users (mode 644): run chmod 600 ${keys}\n`,
    );
  });
});
