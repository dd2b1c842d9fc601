import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseGenerateArgs } from '../src/generate-args.js';
import { parseLoadTestArgs } from '../src/load-test-args.js';

const noEnvFile = ['--env-file', '/dev/null'];

describe('generate-trajectories flags', () => {
  test('defaults: scheduler from ES_SCHEDULER_URL, sample dataset, concurrency 4', async () => {
    const options = await parseGenerateArgs(noEnvFile, { ES_SCHEDULER_URL: 'http://head:9000/' });
    expect(options).toMatchObject({
      schedulerUrl: 'http://head:9000',
      apiKey: 'EMPTY',
      dataset: 'sample',
      concurrency: 4,
      outputDir: 'trajectories',
      maxTurns: 20,
      maxTokens: 4096,
      reasoningEffort: 'high',
      format: 'es',
      overwrite: false,
      forceFinalAnswer: true,
      waitTimeoutMs: 600_000,
      waitIntervalMs: 5_000,
    });
    expect(options.chatTemplate).toBeUndefined();
    expect(options.maxToolCalls).toBeUndefined();
    expect(options.numSamples).toBeUndefined();
    expect((await parseGenerateArgs(noEnvFile, {})).schedulerUrl).toBe('http://localhost:8780');
  });

  test('flags as the seed names them, plus tools settings', async () => {
    const options = await parseGenerateArgs(
      [
        ...noEnvFile,
        '--scheduler-url',
        'http://sched:8780',
        '--dataset',
        'q.jsonl',
        '--num-samples',
        '3',
        '--concurrency',
        '16',
        '--output-dir',
        'out',
        '--model',
        'openai/gpt-oss-120b',
        '--max-turns',
        '5',
        '--max-tokens',
        '512',
        '--reasoning-effort',
        'low',
        '--resume',
        '--seed',
        '7',
        '--tokenizer',
        '/models/gpt-oss-120b',
        '--serper-url',
        'http://127.0.0.1:1/',
        '--tool-result-max-chars',
        '500',
        '--tool-timeout',
        '2.5',
      ],
      { ES_API_KEY: 'k1,k2', SERPER_API_KEY: 's' },
    );
    expect(options).toMatchObject({
      schedulerUrl: 'http://sched:8780',
      apiKey: 'k1',
      dataset: 'q.jsonl',
      numSamples: 3,
      concurrency: 16,
      outputDir: 'out',
      model: 'openai/gpt-oss-120b',
      maxTurns: 5,
      maxTokens: 512,
      reasoningEffort: 'low',
      overwrite: false,
      seed: 7,
      tokenizer: '/models/gpt-oss-120b',
      tools: {
        serperBaseUrl: 'http://127.0.0.1:1',
        maxResultChars: 500,
        timeoutMs: 2500,
        serperApiKey: 's',
      },
    });
  });

  test("the original tool's flag names and environment, and the seed format", async () => {
    const options = await parseGenerateArgs(
      [
        ...noEnvFile,
        '--max-rounds',
        '15',
        '--max-gen-tokens',
        '8192',
        '--max-tool-calls',
        '10',
        '--format',
        'seed',
        '--overwrite',
        '--chat-template',
        'bundled-test',
        '--revision',
        'v1',
        '--wait-timeout',
        '30',
        '--no-force-final-answer',
      ],
      {
        ELASTIC_SERVING_URL: 'http://login1:8780',
        HF_HOME: '/data/hf',
        HF_ENDPOINT: 'http://127.0.0.1:9',
        HF_TOKEN: 'hf_x',
      },
    );
    expect(options).toMatchObject({
      schedulerUrl: 'http://login1:8780',
      maxTurns: 15,
      maxTokens: 8192,
      maxToolCalls: 10,
      format: 'seed',
      overwrite: true,
      chatTemplate: 'bundled-test',
      revision: 'v1',
      waitTimeoutMs: 30_000,
      forceFinalAnswer: false,
      huggingFace: {
        cacheDir: '/data/hf/hub',
        endpoint: 'http://127.0.0.1:9',
        token: 'hf_x',
        offline: false,
      },
    });
    // ES_SCHEDULER_URL wins over the original's variable.
    const both = await parseGenerateArgs(noEnvFile, {
      ES_SCHEDULER_URL: 'http://a:1',
      ELASTIC_SERVING_URL: 'http://b:2',
    });
    expect(both.schedulerUrl).toBe('http://a:1');
  });

  test('API keys come from the .env file unless the environment has them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'es-env-'));
    const envFile = join(dir, '.env');
    await writeFile(envFile, '# keys\nSERPER_API_KEY=from-file\nJINA_API_KEY="jina file"\n');
    const options = await parseGenerateArgs(['--env-file', envFile], {
      SERPER_API_KEY: 'from-env',
    });
    expect(options.tools).toMatchObject({ serperApiKey: 'from-env', jinaApiKey: 'jina file' });
    await expect(parseGenerateArgs(['--env-file', join(dir, 'missing')], {})).rejects.toMatchObject(
      {
        param: 'env-file',
      },
    );
  });

  test.each([
    [
      ['--concurrency', '0'],
      '--concurrency must be an integer >= 1 (got 0); for example --concurrency 8',
    ],
    [
      ['--num-samples', 'many'],
      '--num-samples must be an integer >= 1 (got NaN); for example --num-samples 10',
    ],
    [['--max-turns', '1.5'], '--max-turns must be an integer >= 1'],
    [
      ['--reasoning-effort', 'extreme'],
      '--reasoning-effort must be one of low, medium, high (got "extreme")',
    ],
    [
      ['--scheduler-url', 'localhost:8780'],
      '--scheduler-url must be an http(s) URL (got "localhost:8780")',
    ],
    [['--concurency', '4'], 'Unknown argument: concurency'],
    [['--format', 'csv'], '--format must be es or seed (got "csv"); for example --format seed'],
    [['--resume', '--overwrite'], '--resume and --overwrite contradict each other'],
    [['--max-rounds', '0'], '--max-turns must be an integer >= 1 (got 0)'],
    [['--max-tool-calls', '-1'], '--max-tool-calls must be an integer >= 0'],
    [['--wait-timeout', '-5'], '--wait-timeout must be a number >= 0'],
  ])('%j is refused with a message naming the flag', async (argv, message) => {
    await expect(parseGenerateArgs([...noEnvFile, ...argv], {})).rejects.toMatchObject({
      code: 'invalid_option',
      message: expect.stringContaining(message),
    });
  });
});

describe('load-test flags', () => {
  test('defaults and the /v1 base URL', async () => {
    const { options, json } = await parseLoadTestArgs([], {
      ES_SCHEDULER_URL: 'http://head:8780/v1',
    });
    expect(json).toBe(false);
    expect(options).toMatchObject({
      baseURL: 'http://head:8780/v1',
      api: 'chat',
      stream: true,
      concurrency: 8,
      promptTokens: 128,
      maxTokens: 128,
      maxRetries: 0,
    });
    expect(options.requests).toBeUndefined();
  });

  test('a duration, no streaming, completions and JSON output', async () => {
    const { options, json } = await parseLoadTestArgs(
      ['--duration', '1.5', '--no-stream', '--api', 'completions', '--json', '--requests', '10'],
      {},
    );
    expect(json).toBe(true);
    expect(options).toMatchObject({
      durationMs: 1500,
      stream: false,
      api: 'completions',
      requests: 10,
    });
  });

  test.each([
    [['--api', 'embeddings'], /Invalid values:[\s\S]*api/],
    [['--concurrency', '-1'], /--concurrency must be an integer >= 1/],
    [['--duration', '0'], /--duration must be a number >= 0.1/],
  ])('%j is refused', async (argv, message) => {
    await expect(parseLoadTestArgs(argv, {})).rejects.toThrow(message);
  });
});
