import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  WORKER_FLAGS,
  readSchedulerUrl,
  readSchedulerUrlSync,
  removeSchedulerUrl,
  schedulerUrlFilePath,
  writeSchedulerUrl,
} from '../src/index.js';

describe('the scheduler-URL file', () => {
  it('lives at <log dir>/scheduler-url, as the flag help says', () => {
    expect(schedulerUrlFilePath('/shared/logs')).toBe('/shared/logs/scheduler-url');
    expect(WORKER_FLAGS.schedulerUrlFile.describe).toContain('<log dir>/scheduler-url');
  });

  it('is written whole (a rename, no temporary left) and read back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-url-'));
    const file = schedulerUrlFilePath(dir);
    expect(await readSchedulerUrl(file)).toEqual({ kind: 'missing' });
    writeSchedulerUrl(file, 'http://login1:8780');
    writeSchedulerUrl(file, 'http://login2:8781');
    expect(readFileSync(file, 'utf8')).toBe('http://login2:8781\n');
    expect(readdirSync(dir)).toEqual(['scheduler-url']);
    expect(await readSchedulerUrl(file)).toEqual({ kind: 'url', url: 'http://login2:8781' });
    expect(readSchedulerUrlSync(file)).toEqual({ kind: 'url', url: 'http://login2:8781' });
    expect(() => writeSchedulerUrl(file, 'login1:8780')).toThrow(/not an http\(s\) URL/);
  });

  it('tells a missing, empty or invalid file apart from a URL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-url-'));
    const file = join(dir, 'scheduler-url');
    writeFileSync(file, '\n');
    expect(await readSchedulerUrl(file)).toEqual({ kind: 'missing' });
    writeFileSync(file, '  login1:8780  \nhttp://second-line:1\n');
    expect(await readSchedulerUrl(file)).toEqual({ kind: 'invalid', text: 'login1:8780' });
    writeFileSync(file, ' https://gw.example/es \n');
    expect(readSchedulerUrlSync(file)).toEqual({ kind: 'url', url: 'https://gw.example/es' });
  });

  it('is removed at exit only while it names this scheduler', () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-url-'));
    const file = schedulerUrlFilePath(dir);
    writeSchedulerUrl(file, 'http://newer:9000');
    expect(removeSchedulerUrl(file, 'http://older:8780')).toBe(false);
    expect(readSchedulerUrlSync(file)).toEqual({ kind: 'url', url: 'http://newer:9000' });
    expect(removeSchedulerUrl(file, 'http://newer:9000')).toBe(true);
    expect(readSchedulerUrlSync(file)).toEqual({ kind: 'missing' });
    expect(removeSchedulerUrl(file, 'http://newer:9000')).toBe(false);
  });
});
