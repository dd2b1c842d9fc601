import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { errorOf } from './config-fixtures.js';

describe('the bounds flags and config keys', () => {
  it('default to 16384 connections, a 128 MiB body budget and a 60 s client idle timeout', () => {
    expect(resolveConfig({ model: 'm' }, {})).toMatchObject({
      maxConnections: 16_384,
      bodyBudgetMb: 128,
      clientIdleTimeoutS: 60,
    });
  });

  it('are read from the command line', async () => {
    const flags = await parseFlags([
      '--model',
      'm',
      '--max-connections',
      '100',
      '--body-budget-mb',
      '256',
      '--client-idle-timeout',
      '5',
    ]);
    expect(resolveConfig(flags, {})).toMatchObject({
      maxConnections: 100,
      bodyBudgetMb: 256,
      clientIdleTimeoutS: 5,
    });
  });

  it('refuse values that cannot work, naming the field', () => {
    expect(errorOf(() => resolveConfig({ model: 'm', maxConnections: -1 }, {})).message).toMatch(
      /maxConnections|max_connections/,
    );
    expect(errorOf(() => resolveConfig({ model: 'm', maxConnections: 1.5 }, {})).message).toMatch(
      /maxConnections|max_connections/,
    );
    // Under 4 x the largest body (32 MiB), the largest body could never be read.
    expect(errorOf(() => resolveConfig({ model: 'm', bodyBudgetMb: 64 }, {})).message).toMatch(
      /bodyBudgetMb|body_budget_mb/,
    );
    expect(errorOf(() => resolveConfig({ model: 'm', clientIdleTimeout: -1 }, {})).message).toMatch(
      /clientIdleTimeout|client_idle_timeout/,
    );
  });
});

describe('--worker-port', () => {
  it('defaults to 0 (any free port) and is read from the command line', async () => {
    expect(resolveConfig({ model: 'm' }, {}).workerPort).toBe(0);
    const flags = await parseFlags(['--model', 'm', '--worker-port', '8790']);
    expect(resolveConfig(flags, {}).workerPort).toBe(8790);
  });

  it('refuses the client port, naming the flag and the fix', () => {
    const error = errorOf(() => resolveConfig({ model: 'm', port: 8790, workerPort: 8790 }, {}));
    expect(error.message).toMatch(
      /--worker-port \(worker_port\) 8790 is --port too.*0 for any free port/,
    );
    expect(errorOf(() => resolveConfig({ model: 'm', workerPort: 70_000 }, {})).message).toMatch(
      /workerPort|worker_port/,
    );
  });
});

describe('--cold-start-wait', () => {
  it('defaults to 600 s and is read from the command line and the config file', async () => {
    expect(resolveConfig({ model: 'm' }, {}).coldStartWaitS).toBe(540);
    const flags = await parseFlags(['--model', 'm', '--cold-start-wait', '900']);
    expect(resolveConfig(flags, {}).coldStartWaitS).toBe(900);
    expect(resolveConfig({ model: 'm', coldStartWait: 0 }, {}).coldStartWaitS).toBe(0);
  });

  it('refuses a negative or longer than a day wait, naming the flag and the fix', () => {
    for (const coldStartWait of [-1, 86_401]) {
      const error = errorOf(() => resolveConfig({ model: 'm', coldStartWait }, {}));
      expect(error.message).toMatch(
        /--cold-start-wait \(cold_start_wait\) .* is not a number of seconds from 0 to 86400: pass how long/,
      );
      expect(error).toMatchObject({ code: 'invalid_config', param: 'coldStartWait' });
    }
  });
});
