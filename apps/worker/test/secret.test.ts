import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WorkerArgsError } from '../src/args.js';
import { readSecretFile } from '../src/main.js';

const dir = mkdtempSync(join(tmpdir(), 'es-worker-secret-'));

describe('--secret-file (the one secret policy of @es/protocol)', () => {
  it('reads the file the scheduler made (owner-only)', () => {
    const file = join(dir, 'secret');
    writeFileSync(file, 'top secret\n');
    chmodSync(file, 0o600);
    expect(readSecretFile(file)).toBe('top secret');
  });

  it.each([
    [
      'readable by others',
      0o644,
      'top secret\n',
      /is readable by other users \(mode 644\): run chmod 600 /,
    ],
    ['empty', 0o600, '\n', /is empty: pass the file the scheduler created/],
  ])('refuses a file %s, naming --secret-file and the fix', (_, mode, content, message) => {
    const file = join(dir, `secret-${mode}-${content.length}`);
    writeFileSync(file, content);
    chmodSync(file, mode);
    const error = (() => {
      try {
        readSecretFile(file);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(WorkerArgsError);
    expect(error).toMatchObject({ param: 'secret-file', message: expect.stringMatching(message) });
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(/\(--secret-file, or ES_SECRET_FILE\)$/);
  });
});
