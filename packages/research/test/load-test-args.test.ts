import { describe, expect, test } from 'vitest';
import { parseLoadTestArgs } from '../src/load-test-args.js';

describe("load-test takes the seed's scripts/test_load.py flags", () => {
  test("the seed's usage line, with every flag it had, parses to the same run", async () => {
    const { options } = await parseLoadTestArgs(
      [
        '--scheduler-url',
        'http://head:8780',
        '--model',
        'openai/gpt-oss-120b',
        '--num-requests',
        '100',
        '--concurrency',
        '32',
        '--max-tokens',
        '256',
        '--temperature',
        '0.7',
      ],
      {},
    );
    expect(options).toMatchObject({
      baseURL: 'http://head:8780/v1',
      model: 'openai/gpt-oss-120b',
      requests: 100,
      concurrency: 32,
      maxTokens: 256,
      temperature: 0.7,
    });
  });

  test("the seed's ELASTIC_SERVING_URL is the scheduler when ES_SCHEDULER_URL is unset", async () => {
    const seedEnv = { ELASTIC_SERVING_URL: 'http://seed-head:8780' };
    expect((await parseLoadTestArgs([], seedEnv)).options.baseURL).toBe('http://seed-head:8780/v1');
    expect(
      (await parseLoadTestArgs([], { ...seedEnv, ES_SCHEDULER_URL: 'http://es:1' })).options
        .baseURL,
    ).toBe('http://es:1/v1');
  });

  test('defaults: synthetic prompts of 128 tokens, no temperature, a 600 s wait polled every 5 s', async () => {
    const { options } = await parseLoadTestArgs([], {});
    expect(options).toMatchObject({
      promptStyle: 'synthetic',
      promptTokens: 128,
      waitTimeoutMs: 600_000,
      waitIntervalMs: 5_000,
    });
    expect(options.temperature).toBeUndefined();
    const natural = await parseLoadTestArgs(
      ['--prompt-style', 'natural', '--wait-timeout', '0', '--wait-interval', '0.5'],
      {},
    );
    expect(natural.options).toMatchObject({
      promptStyle: 'natural',
      waitTimeoutMs: 0,
      waitIntervalMs: 500,
    });
  });

  test.each([
    [
      ['--num-requests', '0'],
      '--num-requests must be an integer >= 1 (got 0); for example --num-requests 1000',
    ],
    [['--num-requests=2.5'], '--num-requests must be an integer >= 1'],
    [['--requests', '0'], '--requests must be an integer >= 1'],
    [
      ['--temperature', '-0.1'],
      '--temperature must be a number >= 0 (got -0.1); for example --temperature 0.7',
    ],
    [['--temperature', 'hot'], '--temperature must be a number >= 0 (got NaN)'],
    [['--wait-timeout', '-1'], '--wait-timeout must be a number >= 0'],
    [['--prompt-style', 'poetic'], 'Invalid values:'],
    [
      ['--prompt-style', 'natural', '--prompt-tokens', '512'],
      '--prompt-tokens sets the length of synthetic prompts; natural-language questions have ' +
        'their own length: drop --prompt-tokens, or use --prompt-style synthetic',
    ],
  ])('%j is refused with a message naming the flag', async (argv, message) => {
    await expect(parseLoadTestArgs(argv, {})).rejects.toMatchObject({
      code: 'invalid_option',
      message: expect.stringContaining(message),
    });
  });
});
