import { describe, expect, it } from 'vitest';
import {
  DEPLOYMENT_NAME,
  PoolError,
  createRegistry,
  deploymentView,
  tensorParallelSizes,
  validateDeployment,
} from '../src/index.js';
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

describe('the deployment rules the scheduler config checks too', () => {
  it.each([
    [8, [1, 2, 4, 8]],
    [6, [1, 2, 3, 6]],
    [1, [1]],
    [7, [1, 7]],
  ])('tensorParallelSizes(%i) is %j', (gpusPerNode, sizes) => {
    expect(tensorParallelSizes(gpusPerNode)).toEqual(sizes);
  });

  it('refuses a TP size outside tensorParallelSizes, accepts every one inside', () => {
    for (const tp of tensorParallelSizes(8)) {
      expect(() =>
        validateDeployment(deployment('m', { gpusPerNode: 8, tensorParallelSize: tp })),
      ).not.toThrow();
    }
    const error = refusal(() =>
      validateDeployment(deployment('m', { gpusPerNode: 8, tensorParallelSize: 3 })),
    );
    expect(error).toMatchObject({ param: 'tensorParallelSize' });
  });

  it.each([
    ['llama-3.70b_v2', true],
    ['a'.repeat(63), true],
    ['a'.repeat(64), false],
    ['-x', false],
    ['.x', false],
    ['a b', false],
    ['a/b', false],
  ])('DEPLOYMENT_NAME %j: %s, as validateDeployment judges it', (name, ok) => {
    expect(DEPLOYMENT_NAME.test(name)).toBe(ok);
    const judge = () => validateDeployment(deployment(name));
    if (ok) expect(judge).not.toThrow();
    else expect(refusal(judge)).toMatchObject({ param: 'name' });
  });
});

describe('deploymentView: the chat output parsers', () => {
  const parsers = (extra: Parameters<typeof deployment>[1]) =>
    deploymentView(deployment('m', extra)).chatParsers;
  it('names the parsers of the engine arguments, in either spelling, the last one winning', () => {
    expect(parsers({})).toBeUndefined();
    expect(
      parsers({ engineArgs: ['--reasoning-parser', 'qwen3', '--tool-call-parser=hermes'] }),
    ).toEqual({ reasoning: 'qwen3', tools: 'hermes' });
    expect(
      parsers({ engineArgs: ['--reasoning-parser=x', '--reasoning-parser', 'deepseek_r1'] }),
    ).toEqual({ reasoning: 'deepseek_r1' });
  });

  it('takes a gpt-oss model for Harmony (vLLM parses it without a flag)', () => {
    expect(parsers({ model: 'openai/GPT-OSS-20b' })).toEqual({ harmony: true });
  });
});
