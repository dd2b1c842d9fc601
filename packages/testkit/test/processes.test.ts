import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { processAlive, until } from '../src/index.js';

describe('processAlive', () => {
  it('is true for a running process, false for a zombie (which kill -0 still finds) and for a pid gone', async () => {
    // The shell's background child exits after the shell has become `sleep` (which never
    // reaps it): a zombie until the sleep ends. (Had it exited at once, the shell could have
    // reaped it before its exec.)
    const child = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const zombie = Number(line.toString().trim());
      expect(processAlive(child.pid ?? 0)).toBe(true);
      await until(() => (processAlive(zombie) ? undefined : true), 5_000, 'the zombie');
      expect(() => process.kill(zombie, 0)).not.toThrow();
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    expect(processAlive(child.pid ?? 0)).toBe(false);
  });
});
