/**
 * `es-proxy`'s command line. Secrets never travel in argv: the shared secret is read from
 * `--secret-file` under the one secret policy of `@es/protocol`.
 */
import { EsError, isHttpUrl, isSecretFileError, readSecret } from '@es/protocol';
import yargs from 'yargs';

/** A flag `es-proxy` cannot use; the message names the flag and the fix. */
export class ProxyFlagsError extends EsError<'invalid_flag'> {
  override readonly name = 'ProxyFlagsError';
  /** The flag without its dashes. */
  declare readonly param: string;
  constructor(flag: string, message: string) {
    super('invalid_flag', message, { param: flag });
  }
}

/** Everything `es-proxy` was asked to do, validated, defaults applied. */
export interface ProxyFlags {
  secretFile: string;
  schedulerUrlFile: string;
  schedulerUrl: string | undefined;
  host: string;
  port: number;
  processes: number;
  id: string | undefined;
  stateFile: string | undefined;
}

const USAGE = `$0 --secret-file <file> --scheduler-url-file <file> [options]

Serve /v1 (OpenAI-compatible) from the scheduler's routing table in --processes worker
processes sharing one port; every other path is forwarded to the scheduler.`;

/** The flag yargs' failure message is about (`Unknown argument: x` names `x`). */
function flagOf(message: string): string {
  return (
    /^(?:Unknown arguments?|Missing required argument|Invalid values):?\s*(?:Argument:\s*)?([A-Za-z0-9-]+)/.exec(
      message,
    )?.[1] ?? ''
  );
}

function wholeNumber(flag: string, value: number, min: number, max: number, example: string) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ProxyFlagsError(
      flag,
      `--${flag} must be a whole number from ${min} to ${max}, got ${String(value)}: pass e.g. --${flag} ${example}`,
    );
  }
}

/**
 * Parse and check `es-proxy`'s flags.
 * @throws {ProxyFlagsError} naming the flag and the fix.
 * @example
 * const flags = await parseProxyFlags(['--secret-file', 's', '--scheduler-url-file', 'u']);
 */
export async function parseProxyFlags(argv: readonly string[]): Promise<ProxyFlags> {
  const raw = await yargs([...argv])
    .scriptName('es-proxy')
    .usage(USAGE)
    .options({
      'secret-file': {
        type: 'string',
        demandOption: true,
        describe: "The scheduler's secret file (<log dir>/secret; owner-only)",
      },
      'scheduler-url-file': {
        type: 'string',
        demandOption: true,
        describe: "File whose first line is the scheduler's control URL (<log dir>/control-url)",
      },
      'scheduler-url': {
        type: 'string',
        describe: 'The control URL used while --scheduler-url-file names none',
      },
      host: { type: 'string', default: '127.0.0.1', describe: 'Address to listen on' },
      port: { type: 'number', default: 8780, describe: 'Port to listen on (0: any free port)' },
      processes: {
        type: 'number',
        default: 1,
        describe: 'Worker processes sharing the port',
      },
      id: { type: 'string', describe: 'Name in reports and es status (default <host>:<pid>)' },
      'state-file': {
        type: 'string',
        describe: 'Written (0600) once every process listens: pids, host, port',
      },
    })
    .strict()
    .help()
    .version(false)
    .fail((message, error) => {
      throw error ?? new ProxyFlagsError(flagOf(message), `${message} (see es-proxy --help)`);
    })
    .parseAsync();
  for (const flag of [
    'secret-file',
    'scheduler-url-file',
    'scheduler-url',
    'host',
    'id',
    'state-file',
  ]) {
    const value: unknown = raw[flag];
    if (Array.isArray(value)) {
      throw new ProxyFlagsError(flag, `--${flag} is given ${value.length} times: pass it once`);
    }
    if (value === '') {
      throw new ProxyFlagsError(flag, `--${flag} is empty: pass a value or leave the flag out`);
    }
  }
  wholeNumber('port', raw.port, 0, 65535, '8780');
  wholeNumber('processes', raw.processes, 1, 256, '4');
  const schedulerUrl = raw['scheduler-url'];
  if (schedulerUrl !== undefined && !isHttpUrl(schedulerUrl)) {
    throw new ProxyFlagsError(
      'scheduler-url',
      `--scheduler-url "${schedulerUrl}" is not an http(s) URL: pass e.g. --scheduler-url http://127.0.0.1:8781`,
    );
  }
  return {
    secretFile: raw['secret-file'],
    schedulerUrlFile: raw['scheduler-url-file'],
    schedulerUrl,
    host: raw.host,
    port: raw.port,
    processes: raw.processes,
    id: raw.id,
    stateFile: raw['state-file'],
  };
}

/**
 * Read the shared secret under the one secret policy of `@es/protocol` (owned by this
 * user, unreadable by group and others, not empty); a refusal names `--secret-file`.
 */
export function readSecretFile(file: string): string {
  try {
    return readSecret(file);
  } catch (error) {
    if (!isSecretFileError(error)) throw error;
    throw new ProxyFlagsError('secret-file', `${error.message} (--secret-file)`);
  }
}
