import { chmodSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSecret } from '@es/protocol';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/settings.js';
import { ensureLogDir, loadOrCreateSecret } from '../src/secret.js';

const dir = mkdtempSync(join(tmpdir(), 'es-scheduler-secret-'));

describe("the scheduler's secret", () => {
  it('is created once, owner-only, and is what the workers read', () => {
    const file = join(dir, 'logs', 'secret');
    const secret = loadOrCreateSecret(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSecret(file)).toBe(secret);
    expect(readSecret(file)).toBe(secret);
  });

  it.each([
    [0o644, '0123456789abcdef\n', /readable by other users \(mode 644\): run chmod 600/],
    [0o600, 'short\n', /fewer than 16 characters: delete it/],
  ])('refuses mode %s / %j as a ConfigError on secretFile', (mode, content, message) => {
    const file = join(dir, `secret-${mode}-${content.length}`);
    writeFileSync(file, content);
    chmodSync(file, mode);
    let error: unknown;
    try {
      loadOrCreateSecret(file);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).toMatchObject({ param: 'secretFile', message: expect.stringMatching(message) });
    expect((error as Error).message).toContain(file);
  });
});

describe("the scheduler's log directory", () => {
  it('is made 0700 when missing, and refused as a ConfigError on logDir when open to others', () => {
    const made = join(dir, 'made-logs');
    expect(ensureLogDir(made)).toBe(made);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    const open = join(dir, 'open-logs');
    mkdirSync(open);
    chmodSync(open, 0o750);
    let error: unknown;
    try {
      ensureLogDir(open);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).toMatchObject({
      param: 'logDir',
      message: `--log-dir ${open} is open to other users (mode 750): run chmod 700 ${open}, or pass another --log-dir (log_dir)`,
    });
  });
});
