import { describe, expect, it } from 'vitest';
import { ProxyFlagsError, parseProxyFlags } from '../src/flags.js';

const REQUIRED = ['--secret-file', '/s', '--scheduler-url-file', '/u'];

async function refusal(argv: string[]): Promise<ProxyFlagsError> {
  const error = await parseProxyFlags(argv).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ProxyFlagsError);
  return error as ProxyFlagsError;
}

describe('es-proxy flags', () => {
  it('applies the defaults of the design', async () => {
    expect(await parseProxyFlags(REQUIRED)).toEqual({
      secretFile: '/s',
      schedulerUrlFile: '/u',
      schedulerUrl: undefined,
      host: '127.0.0.1',
      port: 8780,
      processes: 1,
      id: undefined,
      stateFile: undefined,
    });
  });

  it.each([
    [['--scheduler-url-file', '/u'], 'secret-file', /secret-file/],
    [[...REQUIRED, '--processes', '0'], 'processes', /--processes must be .* e\.g\. --processes 4/],
    [[...REQUIRED, '--port', '70000'], 'port', /--port must be/],
    [[...REQUIRED, '--scheduler-url', 'login1:8781'], 'scheduler-url', /not an http\(s\) URL/],
    [[...REQUIRED, '--proccesses', '2'], 'proccesses', /Unknown argument/],
    [[...REQUIRED, '--host', 'a', '--host', 'b'], 'host', /given 2 times/],
  ])('%j is refused naming --%s and the fix', async (argv, flag, message) => {
    const error = await refusal(argv);
    expect(error.param).toBe(flag);
    expect(error.code).toBe('invalid_flag');
    expect(error.message).toMatch(message);
  });
});
