import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_SIGNATURE_HEADERS,
  adminAnswerSignature,
  adminRequestSignature,
  runCli,
} from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'es-cli-keys-'));
const seen: { path: string; headers: IncomingHttpHeaders }[] = [];
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers });
    res.setHeader('content-type', 'application/json');
    const body = req.url?.startsWith('/v1/models')
      ? JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model' }] })
      : JSON.stringify({ events: [] });
    // Answers as a scheduler holding `the-admin-key` does: signed over the request's nonce.
    const nonce = req.headers[ADMIN_SIGNATURE_HEADERS.nonce];
    if (typeof nonce === 'string') {
      res.setHeader(
        ADMIN_SIGNATURE_HEADERS.answer,
        adminAnswerSignature('the-admin-key', { nonce, status: 200, body }),
      );
    }
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

function keyFile(name: string, content: string, mode = 0o600): string {
  const file = join(dir, name);
  writeFileSync(file, content);
  chmodSync(file, mode);
  return file;
}

async function es(argv: string[], env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env: { ES_SCHEDULER_URL: url, ...env },
    cwd: dir,
  });
  return { code, stdout, stderr };
}

describe('es: keys from files, so they are not in ps', () => {
  it('sends the first key of --api-key-file to /v1, before ES_API_KEY', async () => {
    const file = keyFile('api-keys', '# mine\nk-file\nk-other\n');
    expect(await es(['models', '--api-key-file', file], { ES_API_KEY: 'k-env' })).toMatchObject({
      code: 0,
      stdout: 'm\n',
    });
    expect(seen.at(-1)?.headers.authorization).toBe('Bearer k-file');
    await es(['models'], { ES_API_KEY: 'k-env' });
    expect(seen.at(-1)?.headers.authorization).toBe('Bearer k-env');
  });

  it('signs admin requests with the key of --admin-key-file, and never sends the key', async () => {
    keyFile('admin-key', 'the-admin-key\n');
    expect((await es(['events', '--admin-key-file', 'admin-key'])).code).toBe(0);
    const sent = seen.at(-1)!;
    expect(sent.path).toMatch(/^\/api\/v1\/admin\/events/);
    expect(sent.headers.authorization).toBeUndefined();
    expect(JSON.stringify(sent)).not.toContain('the-admin-key');
    const h = (name: string) => String(sent.headers[name]);
    expect(h(ADMIN_SIGNATURE_HEADERS.signature)).toBe(
      adminRequestSignature('the-admin-key', {
        method: 'GET',
        path: sent.path,
        timestamp: Number(h(ADMIN_SIGNATURE_HEADERS.timestamp)),
        nonce: h(ADMIN_SIGNATURE_HEADERS.nonce),
        body: '',
        // Signed for the port it was sent to.
        audience: new URL(url).port,
      }),
    );
    expect(h('x-es-audience')).toBe(new URL(url).port);
  });

  it('refuses a key file other users can read: exit 2, naming the flag, the file and the fix', async () => {
    const open = keyFile('open-key', 'k\n', 0o644);
    const before = seen.length;
    for (const [command, flag] of [
      ['models', '--api-key-file'],
      ['events', '--admin-key-file'],
    ] as const) {
      expect(await es([command, flag, open])).toEqual({
        code: 2,
        stdout: '',
        stderr: `es: ${flag}: key file ${open} is readable by other users (mode 644): run chmod 600 ${open}\n`,
      });
    }
    expect(seen.length).toBe(before);
  });
});
