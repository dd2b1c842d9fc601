/** Command-line flags of `generate-trajectories`, resolved into {@link GenerateOptions}. */
import {
  createParser,
  defaultApiKey,
  defaultSchedulerUrl,
  integerFlag,
  numberFlag,
  readEnvFile,
  urlFlag,
} from './cli-support.js';
import { ResearchError } from './errors.js';
import type { GenerateOptions } from './generate.js';
import { huggingFaceOptionsFromEnv } from './template-source.js';
import { DEFAULT_JINA_BASE_URL, DEFAULT_SERPER_BASE_URL } from './tools.js';
import type { WebToolsOptions } from './tools.js';

const REASONING_EFFORTS = ['low', 'medium', 'high'] as const;

function buildParser(argv: readonly string[]) {
  return createParser(
    argv,
    'generate-trajectories',
    'Generates deep-research SFT trajectories through an OpenAI-compatible ' +
      "endpoint's /v1/completions, with the model's own chat template and web tools.",
  ).options({
    'scheduler-url': {
      type: 'string',
      describe:
        'Scheduler URL (default $ES_SCHEDULER_URL, else $ELASTIC_SERVING_URL, else http://localhost:8780)',
    },
    'api-key': {
      type: 'string',
      describe: 'Client API key (default: first of $ES_API_KEY, else EMPTY)',
    },
    dataset: {
      type: 'string',
      default: 'sample',
      describe: '"sample", or a .jsonl/.json file of questions',
    },
    'num-samples': { type: 'number', describe: 'Questions to run (default: all)' },
    concurrency: { type: 'number', default: 4, describe: 'Trajectories in flight at once' },
    'output-dir': {
      type: 'string',
      default: 'trajectories',
      describe: 'Directory for the output files (see --format) and summary.json',
    },
    format: {
      type: 'string',
      default: 'es',
      describe:
        "es: trajectories.jsonl (+ failed.jsonl); seed: trajectories_<dataset>.jsonl with the original tool's fields",
    },
    overwrite: {
      type: 'boolean',
      default: false,
      describe: 'Start the output again (default: continue it, skipping questions already done)',
    },
    model: { type: 'string', describe: 'Model name (default: the first of /v1/models)' },
    tokenizer: {
      type: 'string',
      describe:
        'Model directory (chat_template.jinja / tokenizer_config.json) or hub id for the chat template (default: the model, from its directory, the Hugging Face cache or the hub)',
    },
    'chat-template': {
      type: 'string',
      describe:
        'A .jinja file to use as the chat template, or "bundled-test" for the test template of the mock engine',
    },
    revision: {
      type: 'string',
      describe: 'Hub revision of the chat template (default main)',
    },
    'template-name': {
      type: 'string',
      describe: 'Named template in tokenizer_config.json (default tool_use, else default)',
    },
    'max-turns': {
      type: 'number',
      alias: 'max-rounds',
      default: 20,
      describe: 'Rounds per trajectory; the last one must answer',
    },
    'max-tokens': {
      type: 'number',
      alias: 'max-gen-tokens',
      default: 4096,
      describe: 'max_tokens of each completion',
    },
    'max-tool-calls': {
      type: 'number',
      describe: 'Tool calls per trajectory; the next round must answer (default: no limit)',
    },
    'force-final-answer': {
      type: 'boolean',
      default: true,
      describe: 'On the last round, make the model answer instead of running a tool',
    },
    'wait-timeout': {
      type: 'number',
      default: 600,
      describe: 'Seconds to wait for a ready worker before the first trajectory (0: check once)',
    },
    'wait-interval': {
      type: 'number',
      default: 5,
      describe: 'Seconds between checks of /cluster_status while waiting',
    },
    'reasoning-effort': {
      type: 'string',
      default: 'high',
      describe: 'Harmony reasoning effort: low, medium or high',
    },
    temperature: { type: 'number', describe: "Sampling temperature (default: the engine's)" },
    seed: {
      type: 'number',
      describe: "Shuffle the dataset reproducibly; also sent as each request's seed",
    },
    resume: {
      type: 'boolean',
      describe: 'The default (kept for old command lines): continue the output',
    },
    'system-prompt': {
      type: 'string',
      describe: 'Developer instructions (default: a research-assistant prompt)',
    },
    'serper-url': {
      type: 'string',
      default: DEFAULT_SERPER_BASE_URL,
      describe: 'Serper API base URL',
    },
    'jina-url': {
      type: 'string',
      default: DEFAULT_JINA_BASE_URL,
      describe: 'Jina reader base URL',
    },
    'search-results': { type: 'number', default: 10, describe: 'Results per search' },
    'tool-result-max-chars': {
      type: 'number',
      default: 20000,
      describe: 'Longest tool result shown to the model',
    },
    'tool-timeout': { type: 'number', default: 30, describe: 'Seconds per tool HTTP attempt' },
    'tool-retries': { type: 'number', default: 3, describe: 'Tool retries on 429/5xx/timeouts' },
    'request-timeout': {
      type: 'number',
      default: 600,
      describe: 'Seconds per completion request',
    },
    'max-retries': {
      type: 'number',
      default: 3,
      describe: 'Client retries per completion request',
    },
    'env-file': {
      type: 'string',
      describe: 'File with SERPER_API_KEY / JINA_API_KEY (default ./.env if present)',
    },
  });
}

/**
 * Parses `generate-trajectories` flags (the original tool's names `--max-rounds` and
 * `--max-gen-tokens` are aliases). Values come from the flags, then the environment
 * (`ES_SCHEDULER_URL` or the original's `ELASTIC_SERVING_URL`, `ES_API_KEY`,
 * `SERPER_API_KEY`, `JINA_API_KEY`, `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`,
 * `HF_HUB_OFFLINE`), then the `.env` file; invalid values throw `invalid_option` naming the
 * flag and a valid example.
 */
export async function parseGenerateArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Promise<GenerateOptions> {
  const args = await buildParser(argv).parseAsync();
  const fileEnv = await readEnvFile(args['env-file'] ?? '.env', args['env-file'] !== undefined);
  const merged = { ...fileEnv, ...env };
  const effort = args['reasoning-effort'];
  if (args.resume === true && args.overwrite) {
    throw new ResearchError(
      'invalid_option',
      '--resume and --overwrite contradict each other: drop --overwrite to continue the output',
      { param: 'overwrite' },
    );
  }
  const format = args.format;
  if (format !== 'es' && format !== 'seed') {
    throw new ResearchError(
      'invalid_option',
      `--format must be es or seed (got "${format}"); for example --format seed`,
      { param: 'format' },
    );
  }
  if (!(REASONING_EFFORTS as readonly string[]).includes(effort)) {
    throw new ResearchError(
      'invalid_option',
      `--reasoning-effort must be one of ${REASONING_EFFORTS.join(', ')} (got "${effort}")`,
      { param: 'reasoning-effort' },
    );
  }
  const tools: WebToolsOptions = {
    serperBaseUrl: urlFlag('serper-url', args['serper-url']),
    jinaBaseUrl: urlFlag('jina-url', args['jina-url']),
    searchResults: integerFlag('search-results', args['search-results'], 1, '10'),
    maxResultChars: integerFlag(
      'tool-result-max-chars',
      args['tool-result-max-chars'],
      100,
      '20000',
    ),
    timeoutMs: numberFlag('tool-timeout', args['tool-timeout'], 0.1, '30') * 1000,
    maxRetries: integerFlag('tool-retries', args['tool-retries'], 0, '3'),
  };
  if (merged.SERPER_API_KEY) tools.serperApiKey = merged.SERPER_API_KEY;
  if (merged.JINA_API_KEY) tools.jinaApiKey = merged.JINA_API_KEY;
  const options: GenerateOptions = {
    schedulerUrl: urlFlag(
      'scheduler-url',
      args['scheduler-url'] ??
        defaultSchedulerUrl({
          ES_SCHEDULER_URL: merged.ES_SCHEDULER_URL || merged.ELASTIC_SERVING_URL,
        }),
    ),
    apiKey: args['api-key'] ?? defaultApiKey(merged),
    dataset: args.dataset,
    concurrency: integerFlag('concurrency', args.concurrency, 1, '8'),
    outputDir: args['output-dir'],
    maxTurns: integerFlag('max-turns', args['max-turns'], 1, '20'),
    maxTokens: integerFlag('max-tokens', args['max-tokens'], 1, '4096'),
    reasoningEffort: effort,
    format,
    overwrite: args.overwrite,
    forceFinalAnswer: args['force-final-answer'],
    waitTimeoutMs: numberFlag('wait-timeout', args['wait-timeout'], 0, '600') * 1000,
    waitIntervalMs: numberFlag('wait-interval', args['wait-interval'], 0.05, '5') * 1000,
    huggingFace: huggingFaceOptionsFromEnv(merged),
    maxRetries: integerFlag('max-retries', args['max-retries'], 0, '3'),
    requestTimeoutMs: numberFlag('request-timeout', args['request-timeout'], 1, '600') * 1000,
    tools,
  };
  const numSamples = integerFlag('num-samples', args['num-samples'], 1, '10');
  if (numSamples !== undefined) options.numSamples = numSamples;
  const seed = integerFlag('seed', args.seed, 0, '42');
  if (seed !== undefined) options.seed = seed;
  const temperature = numberFlag('temperature', args.temperature, 0, '0.7');
  if (temperature !== undefined) options.temperature = temperature;
  if (args.model !== undefined) options.model = args.model;
  if (args.tokenizer !== undefined) options.tokenizer = args.tokenizer;
  if (args['chat-template'] !== undefined) options.chatTemplate = args['chat-template'];
  if (args.revision !== undefined) options.revision = args.revision;
  const maxToolCalls = integerFlag('max-tool-calls', args['max-tool-calls'], 0, '10');
  if (maxToolCalls !== undefined) options.maxToolCalls = maxToolCalls;
  if (args['template-name'] !== undefined) options.templateName = args['template-name'];
  if (args['system-prompt'] !== undefined) options.systemPrompt = args['system-prompt'];
  return options;
}
