import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PrivateDirError, SecretFileError } from '../src/index.js';
import {
  deriveKeys,
  ensurePrivateDir,
  isPrivateDirError,
  isProtocolError,
  isSecretFileError,
  loadOrCreateSecret,
  readKeyFile,
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

describe('key files (client and admin keys) follow the same policy', () => {
  it('reads one key per line, ignoring blanks and # comments', () => {
    const file = secretFile('# team A\nk-one\n\n  k-two  \r\n# k-old\n');
    expect(readKeyFile(file)).toEqual(['k-one', 'k-two']);
  });

  it.each([0o640, 0o644, 0o604])('refuses mode %s, naming the file and the fix', (mode) => {
    const file = secretFile('k-one\n', mode);
    expect(refusal(() => readKeyFile(file))).toMatchObject({
      code: 'too_open',
      file,
      message: `key file ${file} is readable by other users (mode ${mode.toString(8)}): run chmod 600 ${file}`,
    });
  });

  it("refuses another user's file, a file with no key and a missing file", () => {
    const file = secretFile('k-one\n');
    const owner = statSync(file).uid;
    vi.spyOn(process, 'getuid').mockReturnValue(owner + 1);
    expect(refusal(() => readKeyFile(file))).toMatchObject({
      code: 'wrong_owner',
      message: expect.stringMatching(
        new RegExp(
          `^key file ${file} belongs to uid ${owner}, not to this user \\(uid ${owner + 1}\\): `,
        ),
      ),
    });
    vi.restoreAllMocks();
    expect(refusal(() => readKeyFile(secretFile('# nothing\n\n')))).toMatchObject({
      code: 'too_short',
      message: expect.stringMatching(/holds no key: write one key per line/),
    });
    expect(refusal(() => readKeyFile(join(dir, 'no-keys-here')))).toMatchObject({
      code: 'unreadable',
      message: expect.stringMatching(/^key file .*no-keys-here cannot be read \(ENOENT/),
    });
  });
});

describe('owner-only directories (the log directory)', () => {
  function dirRefusal(fn: () => unknown): PrivateDirError {
    try {
      fn();
    } catch (error) {
      expect(isPrivateDirError(error)).toBe(true);
      expect(isProtocolError(error)).toBe(true);
      return error as PrivateDirError;
    }
    throw new Error('expected a PrivateDirError');
  }

  it('creates a missing directory and its missing parents 0700, whatever the umask', () => {
    const previous = process.umask(0o022);
    try {
      const logs = join(dir, 'made', 'logs');
      expect(ensurePrivateDir(logs)).toBe(logs);
      expect(statSync(logs).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'made')).mode & 0o777).toBe(0o700);
      // An existing owner-only directory is accepted as it is.
      expect(ensurePrivateDir(logs)).toBe(logs);
    } finally {
      process.umask(previous);
    }
  });

  it.each([0o755, 0o750, 0o701, 0o707, 0o770])(
    'refuses an existing directory of mode %s, naming the flag, the mode and the fix',
    (mode) => {
      const logs = join(dir, `open-${mode.toString(8)}`);
      mkdirSync(logs);
      chmodSync(logs, mode);
      expect(dirRefusal(() => ensurePrivateDir(logs, { flag: '--log-dir' }))).toMatchObject({
        code: 'too_open',
        dir: logs,
        message: `--log-dir ${logs} is open to other users (mode ${mode.toString(8)}): run chmod 700 ${logs}, or pass another --log-dir`,
      });
      // Nothing was changed behind the operator's back.
      expect(statSync(logs).mode & 0o777).toBe(mode);
    },
  );

  it('names a relative directory as given and resolved; checks the target of a symbolic link', () => {
    const logs = join(dir, 'rel-logs');
    mkdirSync(logs);
    chmodSync(logs, 0o755);
    const given = relative(process.cwd(), logs);
    expect(dirRefusal(() => ensurePrivateDir(given)).message).toBe(
      `--log-dir ${given} (${logs}) is open to other users (mode 755): run chmod 700 ${logs}, or pass another --log-dir`,
    );
    const link = join(dir, 'link-to-open');
    symlinkSync(logs, link);
    expect(dirRefusal(() => ensurePrivateDir(link)).message).toContain('(mode 755)');
  });

  it("refuses another user's directory and a file in its place", () => {
    const logs = join(dir, 'theirs');
    mkdirSync(logs, { mode: 0o700 });
    const owner = statSync(logs).uid;
    vi.spyOn(process, 'getuid').mockReturnValue(owner + 1);
    expect(dirRefusal(() => ensurePrivateDir(logs, { flag: '--log-dir' }))).toMatchObject({
      code: 'wrong_owner',
      message: `--log-dir ${logs} belongs to uid ${owner}, not to this user (uid ${owner + 1}): another user could read or replace the logs, job scripts and secret in it; pass a --log-dir of your own`,
    });
    vi.restoreAllMocks();
    const file = secretFile('x');
    expect(dirRefusal(() => ensurePrivateDir(file))).toMatchObject({ code: 'not_a_directory' });
    expect(dirRefusal(() => ensurePrivateDir(join(file, 'below'))).code).toBe('not_a_directory');
  });
});
