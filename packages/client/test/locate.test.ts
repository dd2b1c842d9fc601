import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '@es/protocol';
import { ClientError, findAdminKey, locateScheduler } from '../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'es-locate-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A directory with `logs/scheduler-url` and `logs/secret` as a scheduler leaves them. */
function schedulerDir(name: string, url: string, secret = `secret-of-${name}`): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'logs'), { recursive: true });
  writeFileSync(join(dir, 'logs', 'scheduler-url'), `${url}\n`);
  // As the scheduler writes it: owner-only.
  writeFileSync(join(dir, 'logs', 'secret'), `${secret}\n`, { mode: 0o600 });
  return dir;
}

const thrown = (fn: () => unknown): ClientError => {
  try {
    fn();
  } catch (error) {
    if (error instanceof ClientError) return error;
    throw error;
  }
  throw new Error('no error thrown');
};

describe('locateScheduler', () => {
  const cwd = schedulerDir('cwd', 'http://cwd-host:8780');
  const logDir = join(schedulerDir('elsewhere', 'http://logdir-host:9000/'), 'logs');
  const env = {
    ES_SCHEDULER_URL: 'http://es-host:1',
    ELASTIC_SERVING_URL: 'http://seed-host:2',
    ES_LOG_DIR: logDir,
  };

  it('takes --url, then ES_SCHEDULER_URL, ELASTIC_SERVING_URL, $ES_LOG_DIR/scheduler-url, ./logs, the default', () => {
    const steps: [Partial<typeof env>, string | undefined, string, string][] = [
      [env, 'http://flag-host:3/', 'http://flag-host:3', '--url'],
      [env, undefined, 'http://es-host:1', 'ES_SCHEDULER_URL'],
      [{ ...env, ES_SCHEDULER_URL: '' }, undefined, 'http://seed-host:2', 'ELASTIC_SERVING_URL'],
      [{ ES_LOG_DIR: logDir }, undefined, 'http://logdir-host:9000', join(logDir, 'scheduler-url')],
      [{}, undefined, 'http://cwd-host:8780', join(cwd, 'logs', 'scheduler-url')],
    ];
    for (const [e, url, expected, from] of steps) {
      expect(locateScheduler({ url, env: e, cwd })).toEqual({ url: expected, from });
    }
    expect(locateScheduler({ env: {}, cwd: root })).toEqual({
      url: 'http://127.0.0.1:8780',
      from: 'default',
    });
  });

  it('names the source of a value that is not an http(s) URL', () => {
    expect(thrown(() => locateScheduler({ url: 'login1:8780', env: {}, cwd: root }))).toMatchObject(
      {
        code: 'bad_input',
        message: `--url: expected the scheduler's http(s) URL such as http://login1:8780, got "login1:8780"`,
      },
    );
    expect(
      thrown(() => locateScheduler({ env: { ELASTIC_SERVING_URL: 'x' }, cwd: root })).message,
    ).toMatch(/^ELASTIC_SERVING_URL: expected/);
    const bad = join(root, 'bad-logs');
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, 'scheduler-url'), 'garbage\n');
    expect(thrown(() => locateScheduler({ env: { ES_LOG_DIR: bad }, cwd: root }))).toMatchObject({
      code: 'bad_input',
      message: `${join(bad, 'scheduler-url')}: its first line "garbage" is not an http(s) URL: pass --url or ES_SCHEDULER_URL`,
    });
  });

  it('ES_LOG_DIR without a URL file: the scheduler is not serving there', () => {
    const empty = join(root, 'empty-logs');
    mkdirSync(empty, { recursive: true });
    const error = thrown(() => locateScheduler({ env: { ES_LOG_DIR: empty }, cwd: root }));
    expect(error.code).toBe('unreachable');
    expect(error.message).toContain(`no scheduler URL in ${join(empty, 'scheduler-url')}`);
    expect(error.message).toContain(`--log-dir ${empty}`);
  });
});

describe('findAdminKey', () => {
  const cwd = schedulerDir('keys', 'http://h:1', 'cwd-secret');
  const logDir = join(schedulerDir('keys-logdir', 'http://h:2', 'logdir-secret'), 'logs');
  const admin = (secret: string) => deriveKeys(secret).adminToken;

  it('prefers the given key, then the named secret file, then $ES_LOG_DIR/secret, then ./logs/secret', () => {
    expect(findAdminKey({ adminKey: 'k', env: { ES_ADMIN_KEY: 'e' }, cwd })).toEqual({
      key: 'k',
      explicit: true,
      from: '--admin-key',
    });
    expect(findAdminKey({ env: { ES_ADMIN_KEY: 'e' }, cwd })).toMatchObject({ key: 'e' });
    expect(
      findAdminKey({ env: { ES_SECRET_FILE: join(logDir, 'secret'), ES_LOG_DIR: root }, cwd }),
    ).toEqual({ key: admin('logdir-secret'), explicit: true, from: join(logDir, 'secret') });
    expect(findAdminKey({ env: { ES_LOG_DIR: logDir }, cwd })).toEqual({
      key: admin('logdir-secret'),
      explicit: false,
      from: join(logDir, 'secret'),
    });
    expect(findAdminKey({ env: {}, cwd })).toMatchObject({
      key: admin('cwd-secret'),
      explicit: false,
    });
    expect(findAdminKey({ env: {}, cwd: root })).toBeUndefined();
  });

  it('takes --admin-key-file after --admin-key and before ES_ADMIN_KEY, under the secret policy', () => {
    const file = join(root, 'admin-key');
    writeFileSync(file, '# the admin key\nfrom-file\n');
    chmodSync(file, 0o600);
    expect(
      findAdminKey({ adminKeyFile: 'admin-key', env: { ES_ADMIN_KEY: 'e' }, cwd: root }),
    ).toEqual({
      key: 'from-file',
      explicit: true,
      from: file,
    });
    expect(findAdminKey({ adminKey: 'k', adminKeyFile: file, env: {}, cwd })).toMatchObject({
      key: 'k',
    });
    chmodSync(file, 0o644);
    expect(thrown(() => findAdminKey({ adminKeyFile: file, env: {}, cwd }))).toMatchObject({
      code: 'bad_input',
      message: `--admin-key-file: key file ${file} is readable by other users (mode 644): run chmod 600 ${file}`,
    });
  });

  it('a named secret file that cannot be read is a usage error', () => {
    expect(
      thrown(() => findAdminKey({ secretFile: join(root, 'nope'), env: {}, cwd })),
    ).toMatchObject({
      code: 'bad_input',
      message: expect.stringMatching(
        /^secret file .*nope cannot be read \(ENOENT.*\(or pass --admin-key or ES_ADMIN_KEY instead\)$/,
      ),
    });
  });

  it('refuses a secret file other users can read, as the scheduler does, naming the fix', () => {
    const file = join(schedulerDir('open-secret', 'http://h:3'), 'logs', 'secret');
    chmodSync(file, 0o644);
    expect(thrown(() => findAdminKey({ secretFile: file, env: {}, cwd }))).toMatchObject({
      code: 'bad_input',
      message: `secret file ${file} is readable by other users (mode 644): run chmod 600 ${file} (or pass --admin-key or ES_ADMIN_KEY instead)`,
    });
  });
});
