#!/usr/bin/env node
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { MockEngineError } from './errors.js';
import { loadScript } from './options.js';
import { outputFormatFromFlags } from './output-format.js';
import { createMockEngine } from './server.js';

// Exit code of an injected crash (--crash-after), distinct from usage errors (2).
const CRASH_EXIT_CODE = 3;

async function main(): Promise<void> {
  const argv = await yargs(hideBin(process.argv))
    .scriptName('es-mock-engine')
    .usage('$0 [options]\n\nAn OpenAI-compatible engine that behaves like vLLM on the wire.')
    .options({
      model: { type: 'string', default: 'mock-model', describe: 'Model path or hub id' },
      'served-model-name': {
        type: 'string',
        array: true,
        describe: 'Name(s) clients use in "model" (default: --model)',
      },
      host: { type: 'string', default: '127.0.0.1', describe: 'Address to bind' },
      port: { type: 'number', default: 8000, describe: 'Port to bind (0 = any free port)' },
      uds: {
        type: 'string',
        describe: 'Listen on this Unix socket instead of --host/--port (as vLLM does)',
      },
      'api-key': {
        type: 'string',
        describe: 'Require "Authorization: Bearer <key>" on /v1/* (default: env VLLM_API_KEY)',
      },
      'load-delay': {
        type: 'number',
        default: 0,
        describe: 'Milliseconds before the port opens (model loading)',
      },
      'tokens-per-second': {
        type: 'number',
        default: 100,
        describe: 'Generation speed per request (0 = unlimited)',
      },
      ttft: { type: 'number', default: 20, describe: 'Milliseconds to the first token' },
      'max-tokens-default': {
        type: 'number',
        default: 32,
        describe: 'max_tokens when a request gives none',
      },
      'max-model-len': { type: 'number', default: 4096, describe: 'Context length' },
      'max-num-seqs': {
        type: 'number',
        default: 0,
        describe: 'Concurrent generations; more requests wait (0 = unlimited)',
      },
      'kv-cache-tokens': {
        type: 'number',
        default: 65536,
        describe: 'Simulated KV-cache size in tokens (drives the KV usage gauges)',
      },
      'embedding-dims': { type: 'number', default: 384, describe: 'Embedding vector size' },
      'crash-after': {
        type: 'number',
        describe: `Exit with code ${CRASH_EXIT_CODE} after N inference requests`,
      },
      hang: { type: 'boolean', default: false, describe: 'Accept connections, never answer' },
      'die-mid-stream': {
        type: 'number',
        describe: 'Cut every streaming response after N content chunks',
      },
      'kill-mid-stream': {
        type: 'number',
        describe: 'SIGKILL this engine process once a stream has sent N content chunks',
      },
      'drop-chunk': {
        type: 'number',
        describe: 'Test-only fault: every stream silently leaves out its Nth content chunk',
      },
      'fail-rate': {
        type: 'number',
        default: 0,
        describe: 'Fraction of inference requests answered 500',
      },
      seed: { type: 'number', default: 0, describe: 'Seed of --fail-rate randomness' },
      'request-log-dir': {
        type: 'string',
        describe: 'Append one JSON line per inference request to <dir>/requests-<pid>.jsonl',
      },
      script: { type: 'string', describe: 'JSON file of {match?, response, finishReason?} rules' },
      'reasoning-parser': {
        type: 'string',
        describe: 'As vLLM: write and parse <think> reasoning (deepseek_r1, qwen3)',
      },
      'tool-call-parser': {
        type: 'string',
        describe: 'As vLLM: write and parse Hermes <tool_call>s (hermes)',
      },
      'enable-auto-tool-choice': {
        type: 'boolean',
        describe: 'As vLLM: parse tool calls (with --tool-call-parser)',
      },
      merges: {
        type: 'boolean',
        default: false,
        describe: 'Tokenizer byte-pair merges: text re-encodes to other ids than were generated',
      },
      'shutdown-timeout': {
        type: 'number',
        default: 30_000,
        describe: 'After SIGTERM/SIGINT, milliseconds in-flight requests may take to finish',
      },
      'shutdown-delay': {
        type: 'number',
        default: 0,
        describe: 'Milliseconds to linger after the graceful shutdown before exiting',
      },
    })
    .strict()
    .help()
    .parseAsync();

  const engine = createMockEngine({
    model: argv.model,
    servedModelName: argv['served-model-name'],
    // As vLLM: the flag, else VLLM_API_KEY (which keeps the key out of `ps`).
    apiKey: argv['api-key'] ?? (process.env.VLLM_API_KEY || undefined),
    loadDelay: argv['load-delay'],
    tokensPerSecond: argv['tokens-per-second'],
    ttft: argv.ttft,
    maxTokensDefault: argv['max-tokens-default'],
    maxModelLen: argv['max-model-len'],
    maxNumSeqs: argv['max-num-seqs'],
    kvCacheTokens: argv['kv-cache-tokens'],
    embeddingDims: argv['embedding-dims'],
    crashAfter: argv['crash-after'],
    hang: argv.hang,
    dieMidStream: argv['die-mid-stream'],
    killMidStream: argv['kill-mid-stream'],
    onKill: () => process.kill(process.pid, 'SIGKILL'),
    dropChunk: argv['drop-chunk'],
    failRate: argv['fail-rate'],
    seed: argv.seed,
    requestLogDir: argv['request-log-dir'],
    script: argv.script === undefined ? undefined : loadScript(argv.script),
    // A gpt-oss --model writes Harmony, as vLLM renders and parses it.
    outputFormat: outputFormatFromFlags({
      model: argv.model,
      reasoningParser: argv['reasoning-parser'],
      toolCallParser: argv['tool-call-parser'],
      enableAutoToolChoice: argv['enable-auto-tool-choice'],
    }),
    merges: argv.merges,
    onCrash: () => {
      console.error(`mock engine: injected crash after ${argv['crash-after']} requests`);
      process.exit(CRASH_EXIT_CODE);
    },
  });

  // Like uvicorn: the first signal stops accepting and lets in-flight requests finish (up
  // to --shutdown-timeout); a second one exits at once.
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      console.log(`mock engine: ${signal} received again, exiting now`);
      process.exit(0);
    }
    stopping = true;
    console.log(
      `mock engine: ${signal} received, shutting down (in-flight requests: up to ${argv['shutdown-timeout']} ms)`,
    );
    void engine.shutdown(argv['shutdown-timeout']).then(() => {
      console.log('mock engine: in-flight requests done, exiting');
      setTimeout(() => process.exit(0), argv['shutdown-delay']);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  console.log(`mock engine: loading ${argv.model} (load delay ${argv['load-delay']} ms)`);
  const url =
    argv.uds === undefined
      ? await engine.listen(argv.port, argv.host)
      : await engine.listenUnix(argv.uds);
  console.log(`mock engine: listening on ${url}`);
}

main().catch((error: unknown) => {
  let message = String(error);
  if (error instanceof MockEngineError) {
    // Option names in library errors are camelCase; on the command line they are flags.
    message =
      error.code === 'invalid_option'
        ? error.message.replace(
            /^[a-zA-Z]+/,
            (name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
          )
        : error.message;
  }
  console.error(`es-mock-engine: ${message}`);
  process.exit(2);
});
