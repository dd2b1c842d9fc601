import { chmodSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { SecretFileError } from '../src/index.js';
import {
  deriveKeys,
  isProtocolError,
  isSecretFileError,
  loadOrCreateSecret,
  readSecret,
} from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'es-secret-'));
let n = 0;
function secretFile(content: string, mode = 0o600): string {
  const file = join(dir, `secret-${++n}`);
  writeFileSync(file, content);
  chmodSync(file, mode);
  return file;
}
function refusal(fn: () => unknown): SecretFileError {
  try {
    fn();
  } catch (error) {
    expect(isSecretFileError(error)).toBe(true);
    expect(isProtocolError(error)).toBe(true);
    return error as SecretFileError;
  }
  throw new Error('expected a SecretFileError');
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the scheduler creates the secret', () => {
  it('makes 64 random hex characters, mode 0600, in an owner-only directory it creates', () => {
    const file = join(dir, 'new', 'deeper', 'secret');
    const secret = loadOrCreateSecret(file);
    expect(secret).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(file, 'utf8')).toBe(`${secret}\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'new', 'deeper')).mode & 0o777).toBe(0o700);
    // Later starts read the same one: the workers' keys do not change.
    expect(loadOrCreateSecret(file)).toBe(secret);
    expect(readSecret(file)).toBe(secret);
  });

  it('keeps the mode of a directory that exists (the log directory)', () => {
    const logs = join(dir, 'logs');
    mkdirSync(logs, { mode: 0o755 });
    chmodSync(logs, 0o755);
    loadOrCreateSecret(join(logs, 'secret'));
    expect(statSync(logs).mode & 0o777).toBe(0o755);
  });

  it('refuses a secret of its own shorter than 16 characters', () => {
    const file = secretFile('short\n');
    expect(refusal(() => loadOrCreateSecret(file))).toMatchObject({
      code: 'too_short',
      file,
      message: `secret file ${file} holds fewer than 16 characters: delete it to have a new one made`,
    });
  });
});

describe('both sides read it under one policy', () => {
  it('reads an owner-only file, trimmed (the keys are those of the trimmed text)', () => {
    const file = secretFile('top secret\n');
    expect(readSecret(file)).toBe('top secret');
    expect(deriveKeys(readSecret(file))).toEqual(deriveKeys('top secret\n'));
  });

  it.each([0o640, 0o604, 0o644, 0o660, 0o606])(
    'refuses mode %s (group or others), naming the file and the fix',
    (mode) => {
      const file = secretFile('0123456789abcdef', mode);
      for (const read of [() => readSecret(file), () => loadOrCreateSecret(file)]) {
        expect(refusal(read)).toMatchObject({
          code: 'too_open',
          file,
          message: `secret file ${file} is readable by other users (mode ${mode.toString(8)}): run chmod 600 ${file}`,
        });
      }
    },
  );

  it("refuses another user's file", () => {
    const file = secretFile('0123456789abcdef');
    const owner = statSync(file).uid;
    vi.spyOn(process, 'getuid').mockReturnValue(owner + 1);
    expect(refusal(() => readSecret(file))).toMatchObject({
      code: 'wrong_owner',
      message: expect.stringMatching(
        new RegExp(
          `^secret file ${file} belongs to uid ${owner}, not to this user \\(uid ${owner + 1}\\): .*same user`,
        ),
      ),
    });
  });

  it('refuses an empty file, a directory and a missing file', () => {
    const empty = secretFile(' \n');
    expect(refusal(() => readSecret(empty))).toMatchObject({
      code: 'too_short',
      message: expect.stringMatching(/is empty: pass the file the scheduler created/),
    });
    const folder = join(dir, 'a-directory');
    mkdirSync(folder, { mode: 0o700 });
    expect(refusal(() => readSecret(folder))).toMatchObject({ code: 'not_a_file' });
    const missing = join(dir, 'nope');
    expect(refusal(() => readSecret(missing))).toMatchObject({
      code: 'unreadable',
      message: expect.stringMatching(
        new RegExp(
          `^secret file ${missing} cannot be read \\(ENOENT.*\\): pass the scheduler's secret file`,
        ),
      ),
    });
  });
});
