import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { createProgress, formatDuration, formatProgress } from '../src/progress.js';

describe('formatProgress', () => {
  test.each([
    [
      { done: 0, total: 20, failed: 0, elapsedMs: 0 },
      '[--------------------]  0/20   0%  0.00/s  ETA ?',
    ],
    [
      { done: 8, total: 20, failed: 1, elapsedMs: 16_000 },
      '[########------------]  8/20  40%  0.50/s  ETA 24s  failed 1',
    ],
    [
      { done: 20, total: 20, failed: 0, elapsedMs: 100_000 },
      '[####################] 20/20 100%  0.20/s  ETA 0s',
    ],
  ])('%o', (state, line) => {
    expect(formatProgress(state)).toBe(line);
  });

  test('durations read naturally', () => {
    expect([formatDuration(4_400), formatDuration(185_000), formatDuration(7_620_000)]).toEqual([
      '4s',
      '3m05s',
      '2h07m',
    ]);
  });
});

describe('createProgress', () => {
  test('writes one line per item when the stream is not a terminal', () => {
    const stream = new PassThrough();
    const progress = createProgress(stream, 2);
    progress.tick(false, 'q1 completed');
    progress.tick(true, 'q2 failed');
    progress.stop();
    expect(stream.read()?.toString()).toBe('[1/2] q1 completed\n[2/2] q2 failed\n');
  });

  test('redraws a bar in place on a terminal', () => {
    const stream = Object.assign(new PassThrough(), { isTTY: true });
    let now = 0;
    const progress = createProgress(stream, 4, () => now);
    now = 2_000;
    progress.tick(false, 'q1');
    progress.stop();
    const text = stream.read()?.toString() ?? '';
    expect(text).toContain('\r[#####---------------] 1/4  25%  0.50/s  ETA 6s\x1b[K');
    expect(text.endsWith('\n')).toBe(true);
  });
});
