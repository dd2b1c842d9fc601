import { describe, expect, it } from 'vitest';
import { PoolError, createRegistry, validateDeployment } from '../src/index.js';
import { deployment } from './helpers.js';

function refusal(fn: () => unknown): PoolError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PoolError);
    return error as PoolError;
  }
  throw new Error('expected a PoolError');
}

describe('validateDeployment: names that reach a command line', () => {
  it.each([
    [{ servedModelName: '--engine-bin=/bin/sh' }, 'servedModelName', 'starts with "-"'],
    [{ model: '-m' }, 'model', 'starts with "-"'],
    [{ model: 'm\n#SBATCH --qos=high' }, 'model', 'contains a control character'],
    [{ aliases: ['ok', '--x'] }, 'aliases.1', 'starts with "-"'],
    [{ engineArgs: ['--max-num-seqs', '256\nrm'] }, 'engineArgs.1', 'contains a control character'],
  ])('refuses %j, naming the field', (extra, param, message) => {
    const error = refusal(() => validateDeployment(deployment('m', extra)));
    expect(error).toMatchObject({ code: 'invalid_config', param });
    expect(error.message).toMatch(
      new RegExp(`^deployment m: ${param.replace('.', '\\.')} is refused: `),
    );
    expect(error.message).toContain(message);
    // A registry is never built with it either.
    expect(() =>
      createRegistry({ deployments: [deployment('m', extra)], heartbeatIntervalMs: 1000 }),
    ).toThrow(PoolError);
  });

  it('accepts model paths, hub ids, served names, aliases and engine flags', () => {
    expect(() =>
      validateDeployment(
        deployment('m', {
          model: '/models/Llama 3 (70B)',
          servedModelName: 'meta-llama/Llama-3-70B',
          aliases: ['llama'],
          engineArgs: ['--max-num-seqs', '256', '--chat-template', '{{ x }}'],
        }),
      ),
    ).not.toThrow();
  });
});
