/** Shared pieces of the two command-line tools: flag validation, .env files, exit codes. */
import { readFile } from 'node:fs/promises';
import { parseEnv } from 'node:util';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { ResearchError } from './errors.js';
import { isMissingFile, messageOf } from './util.js';

/** Default scheduler URL when neither `--scheduler-url` nor `ES_SCHEDULER_URL` is set. */
export const DEFAULT_SCHEDULER_URL = 'http://localhost:8780';

type Env = Record<string, string | undefined>;

/** `--scheduler-url`'s default: `ES_SCHEDULER_URL`, else {@link DEFAULT_SCHEDULER_URL}. */
export function defaultSchedulerUrl(env: Env): string {
  return env.ES_SCHEDULER_URL || DEFAULT_SCHEDULER_URL;
}

/** `--api-key`'s default: the first of the scheduler's comma-separated `ES_API_KEY`, else `EMPTY`. */
export function defaultApiKey(env: Env): string {
  return env.ES_API_KEY?.split(',')[0]?.trim() || 'EMPTY';
}

/**
 * Reads a `.env` file (`KEY=value` lines, `#` comments, quotes) with Node's own parser.
 * A missing file is fine unless `required`.
 */
export async function readEnvFile(
  path: string,
  required: boolean,
): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isMissingFile(error) && !required) return {};
    throw new ResearchError('invalid_option', `--env-file ${path}: ${messageOf(error)}`, {
      param: 'env-file',
      cause: error,
    });
  }
  const parsed = parseEnv(text);
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed)) if (value !== undefined) result[key] = value;
  return result;
}

/** Checks an integer flag (>= min); the error names the flag and shows a valid use. */
export function integerFlag<T extends number | undefined>(
  name: string,
  value: T,
  min: number,
  example: string,
): T {
  return checkNumber('integer', name, value, min, example);
}

/** Checks a number flag (finite, >= min). */
export function numberFlag<T extends number | undefined>(
  name: string,
  value: T,
  min: number,
  example: string,
): T {
  return checkNumber('number', name, value, min, example);
}

function checkNumber<T extends number | undefined>(
  kind: 'integer' | 'number',
  name: string,
  value: T,
  min: number,
  example: string,
): T {
  if (value === undefined) return value;
  const valid = kind === 'integer' ? Number.isInteger(value) : Number.isFinite(value);
  if (!valid || value < min) {
    throw new ResearchError(
      'invalid_option',
      `--${name} must be ${kind === 'integer' ? 'an integer' : 'a number'} >= ${min} ` +
        `(got ${String(value)}); for example --${name} ${example}`,
      { param: name },
    );
  }
  return value;
}

/** Checks an http(s) URL flag and drops trailing slashes. */
export function urlFlag(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    url = new URL('invalid:');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ResearchError(
      'invalid_option',
      `--${name} must be an http(s) URL (got "${value}"); for example --${name} http://localhost:8780`,
      { param: name },
    );
  }
  return value.replace(/\/+$/, '');
}

/**
 * Runs a CLI's main function: `ResearchError`s print as one line (`name: message`) and exit
 * with 2 for bad flags or 1 otherwise; anything else prints its stack.
 */
export function runCli(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      if (error instanceof ResearchError) {
        process.stderr.write(`${name}: ${error.message}\n`);
        process.exitCode = error.code === 'invalid_option' ? 2 : 1;
      } else {
        process.stderr.write(
          `${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
        );
        process.exitCode = 1;
      }
    },
  );
}

/**
 * A yargs parser with the tools' shared behaviour: unknown flags are errors, and every
 * parse failure is an `invalid_option` error instead of an exit from inside yargs.
 */
export function createParser(argv: readonly string[], scriptName: string, usage: string): Argv {
  return yargs([...argv])
    .scriptName(scriptName)
    .usage(`$0 [options]\n\n${usage}`)
    .strict()
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, error) => {
      if (error) throw error;
      throw new ResearchError('invalid_option', `${message} (see --help)`);
    });
}
