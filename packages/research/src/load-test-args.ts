/** Command-line flags of `load-test`, resolved into {@link LoadTestOptions}. */
import {
  createParser,
  defaultApiKey,
  defaultSchedulerUrl,
  integerFlag,
  numberFlag,
  urlFlag,
} from './cli-support.js';
import { ResearchError } from './errors.js';
import type { LoadTestOptions } from './load-test.js';

/** Parsed `load-test` flags: the run's options plus how to print the report. */
export interface LoadTestArgs {
  options: LoadTestOptions;
  json: boolean;
}

/**
 * Parses `load-test` flags; invalid values throw `invalid_option` naming the flag and a
 * valid example. `ES_SCHEDULER_URL` (or the seed's `ELASTIC_SERVING_URL`) and `ES_API_KEY`
 * provide defaults. The seed's `scripts/test_load.py` flags work as they were:
 * `--scheduler-url`, `--model`, `--num-requests` (an alias of `--requests`),
 * `--concurrency`, `--max-tokens` and `--temperature`.
 */
export async function parseLoadTestArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Promise<LoadTestArgs> {
  const args = await createParser(
    argv,
    'load-test',
    "Drives an OpenAI-compatible endpoint (the scheduler's /v1) with concurrent requests " +
      'and reports throughput, tokens/s, TTFT, latency percentiles and requests per worker. ' +
      'Shows the cluster first and waits for a ready worker.',
  )
    .options({
      'scheduler-url': {
        type: 'string',
        describe:
          'Scheduler URL without /v1 (default $ES_SCHEDULER_URL, else $ELASTIC_SERVING_URL, ' +
          'else http://localhost:8780)',
      },
      'api-key': {
        type: 'string',
        describe: 'Client API key (default: first of $ES_API_KEY, else EMPTY)',
      },
      model: { type: 'string', describe: 'Model name (default: the first of /v1/models)' },
      api: {
        choices: ['chat', 'completions'] as const,
        default: 'chat' as const,
        describe: 'Endpoint: /v1/chat/completions or /v1/completions',
      },
      stream: {
        type: 'boolean',
        default: true,
        describe: 'Stream responses (--no-stream to disable); TTFT needs streaming',
      },
      concurrency: { type: 'number', default: 8, describe: 'Requests in flight at once' },
      requests: {
        alias: 'num-requests',
        type: 'number',
        describe: 'Total requests (default 100 unless --duration is given)',
      },
      duration: { type: 'number', describe: 'Seconds to keep sending (in-flight requests finish)' },
      'prompt-style': {
        choices: ['synthetic', 'natural'] as const,
        default: 'synthetic' as const,
        describe:
          'synthetic: --prompt-tokens random words; natural: readable questions (as the seed sent)',
      },
      'prompt-tokens': {
        type: 'number',
        describe: 'Approximate prompt length in tokens, synthetic prompts only (default 128)',
      },
      'max-tokens': { type: 'number', default: 128, describe: 'max_tokens per request' },
      temperature: {
        type: 'number',
        describe: 'Sampling temperature sent with each request (default: the engine default)',
      },
      'ignore-eos': {
        type: 'boolean',
        default: true,
        describe: 'Ask the engine to always generate max_tokens (vLLM/SGLang)',
      },
      timeout: { type: 'number', default: 600, describe: 'Seconds per request' },
      'max-retries': { type: 'number', default: 0, describe: 'Client retries per request' },
      seed: { type: 'number', default: 1, describe: 'Seed of the random prompts' },
      'wait-timeout': {
        type: 'number',
        default: 600,
        describe: 'Seconds to wait for a ready worker before the test (0: fail at once)',
      },
      'wait-interval': {
        type: 'number',
        default: 5,
        describe: 'Seconds between looks at /cluster_status while waiting',
      },
      json: { type: 'boolean', default: false, describe: 'Print the report as JSON on stdout' },
    })
    .parseAsync();

  const schedulerUrl = urlFlag(
    'scheduler-url',
    args['scheduler-url'] ??
      defaultSchedulerUrl({ ES_SCHEDULER_URL: env.ES_SCHEDULER_URL || env.ELASTIC_SERVING_URL }),
  );
  const promptStyle = args['prompt-style'];
  if (promptStyle === 'natural' && args['prompt-tokens'] !== undefined) {
    throw new ResearchError(
      'invalid_option',
      '--prompt-tokens sets the length of synthetic prompts; natural-language questions have ' +
        'their own length: drop --prompt-tokens, or use --prompt-style synthetic',
      { param: 'prompt-tokens' },
    );
  }
  const options: LoadTestOptions = {
    baseURL: `${schedulerUrl.replace(/\/v1$/, '')}/v1`,
    apiKey: args['api-key'] ?? defaultApiKey(env),
    api: args.api,
    stream: args.stream,
    concurrency: integerFlag('concurrency', args.concurrency, 1, '64'),
    promptStyle,
    promptTokens: integerFlag('prompt-tokens', args['prompt-tokens'] ?? 128, 1, '512'),
    maxTokens: integerFlag('max-tokens', args['max-tokens'], 1, '256'),
    ignoreEos: args['ignore-eos'],
    timeoutMs: numberFlag('timeout', args.timeout, 0.1, '600') * 1000,
    maxRetries: integerFlag('max-retries', args['max-retries'], 0, '2'),
    seed: integerFlag('seed', args.seed, 0, '1'),
    waitTimeoutMs: numberFlag('wait-timeout', args['wait-timeout'], 0, '600') * 1000,
    waitIntervalMs: numberFlag('wait-interval', args['wait-interval'], 0.05, '5') * 1000,
  };
  if (args.model !== undefined) options.model = args.model;
  const temperature = numberFlag('temperature', args.temperature, 0, '0.7');
  if (temperature !== undefined) options.temperature = temperature;
  // Name the flag as the user typed it: the seed's scripts say --num-requests.
  const requestsFlag = argv.some((a) => /^--num-requests(=|$)/.test(a))
    ? 'num-requests'
    : 'requests';
  const requests = integerFlag(requestsFlag, args.requests, 1, '1000');
  if (requests !== undefined) options.requests = requests;
  const duration = numberFlag('duration', args.duration, 0.1, '60');
  if (duration !== undefined) options.durationMs = duration * 1000;
  return { options, json: args.json };
}
