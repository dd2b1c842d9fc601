import { describe, expect, it } from 'vitest';
import { formatLogLine } from '../src/log-format.js';

describe('terminal log lines', () => {
  it('shows time, level, message and the fields the message does not say', () => {
    const line = JSON.stringify({
      level: 30,
      time: Date.UTC(2026, 0, 2, 12, 4, 5, 123),
      pid: 1,
      hostname: 'h',
      name: 'es-scheduler',
      event: 'ready',
      deployment: 'qwen',
      jobId: '17',
      workerId: '17.0.1',
      reason: 'engine up after 41 s',
      msg: 'ready 17.0.1',
    });
    expect(formatLogLine(line)).toBe(
      '12:04:05.123 INFO  ready 17.0.1  deployment=qwen jobId=17 workerId=17.0.1 reason="engine up after 41 s"\n',
    );
  });

  it('passes a line that is not JSON through', () => {
    expect(formatLogLine('plain text')).toBe('plain text\n');
  });
});
