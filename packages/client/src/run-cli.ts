import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import yargs from 'yargs';
import { deriveKeys } from '@es/protocol';
import { DEFAULT_SCHEDULER_URL, createSchedulerClient, type SchedulerClient } from './client.js';
import { ClientError } from './errors.js';
import { formatJobs, formatStatus, formatWorkers, table } from './format.js';

/** Where the CLI writes and what it reads (injected so tests run it in-process). */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  /** Ends `--watch` and `--follow`. */
  signal?: AbortSignal;
  /** Whether stdout is a terminal (`--watch` redraws in place only then). */
  isTTY?: boolean;
}

interface GlobalArgs {
  schedulerUrl: string;
  adminKey: string | undefined;
  secretFile: string | undefined;
}

/** Where `scripts/run.sh` (the scheduler's default `--log-dir logs`) keeps the secret. */
const DEFAULT_SECRET_FILE = 'logs/secret';

function adminKeyOf(args: GlobalArgs): string | undefined {
  if (args.adminKey) return args.adminKey;
  if (!args.secretFile) {
    // Run from the directory the scheduler was started in, `es` finds its secret by itself.
    const fallback = resolve(DEFAULT_SECRET_FILE);
    if (!existsSync(fallback)) return undefined;
    args = { ...args, secretFile: fallback };
  }
  if (!args.secretFile) return undefined;
  try {
    // Same derivation as the scheduler: whoever can read its secret file is its admin.
    return deriveKeys(readFileSync(args.secretFile, 'utf8')).adminToken;
  } catch (error) {
    throw new ClientError(
      'bad_input',
      `cannot read the secret file ${args.secretFile}: pass --admin-key or ES_ADMIN_KEY instead`,
      { cause: error },
    );
  }
}

/**
 * Run the `es` CLI with `argv` (without `node es`). Resolves to the exit code: 0 ok,
 * 1 the scheduler refused or failed, 2 usage errors.
 * @example
 * const code = await runCli(['status', '--json'], { stdout: (t) => process.stdout.write(t),
 *   stderr: (t) => process.stderr.write(t), env: process.env });
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let code = 0;
  const out = (text: string) => io.stdout(text.endsWith('\n') ? text : `${text}\n`);
  const client = (args: GlobalArgs): SchedulerClient => {
    const adminKey = adminKeyOf(args);
    return createSchedulerClient(
      adminKey === undefined ? { url: args.schedulerUrl } : { url: args.schedulerUrl, adminKey },
    );
  };
  const json = (value: unknown) => out(JSON.stringify(value, null, 2));

  const parser = yargs(argv)
    .scriptName('es')
    .usage('$0 <command> [options]\n\nOperate an Elastic Serving scheduler.')
    .option('scheduler-url', {
      type: 'string',
      default: io.env.ES_SCHEDULER_URL ?? DEFAULT_SCHEDULER_URL,
      describe: 'Scheduler URL (env ES_SCHEDULER_URL)',
    })
    .option('admin-key', {
      type: 'string',
      default: io.env.ES_ADMIN_KEY,
      describe: 'Admin key (env ES_ADMIN_KEY)',
    })
    .option('secret-file', {
      type: 'string',
      default: io.env.ES_SECRET_FILE,
      describe:
        "Derive the admin key from the scheduler's secret file (env ES_SECRET_FILE; default ./logs/secret when it exists)",
    })
    .command(
      'status',
      'Deployments, nodes (SLURM state, reason, time left) and workers',
      (y) =>
        y
          .option('json', { type: 'boolean', default: false, describe: 'Print the raw JSON' })
          .option('watch', { type: 'boolean', default: false, describe: 'Refresh in place' })
          .option('interval', {
            type: 'number',
            default: 2,
            describe: 'Seconds between refreshes',
          }),
      async (args) => {
        const c = client(args);
        if (!args.watch) {
          const status = await c.status();
          if (args.json) json(status);
          else out(formatStatus(status));
          return;
        }
        while (!io.signal?.aborted) {
          const status = await c.status();
          const text = args.json ? JSON.stringify(status) : formatStatus(status);
          // Redraw in place on a terminal; a pipe gets one snapshot after the other.
          out(io.isTTY ? `\x1b[H\x1b[2J${new Date().toISOString()}\n${text}` : `${text}\n`);
          await sleep(args.interval * 1000, undefined, { signal: io.signal }).catch(
            () => undefined,
          );
        }
      },
    )
    .command(
      'workers',
      'Workers: state, node, GPU slice, load',
      (y) => y.option('json', { type: 'boolean', default: false }),
      async (args) => {
        const status = await client(args).status();
        if (args.json) json(status.deployments.flatMap((d) => d.workers));
        else out(formatWorkers(status));
      },
    )
    .command(
      'jobs',
      'Node jobs: SLURM state and reason, node, time left, progress',
      (y) => y.option('json', { type: 'boolean', default: false }),
      async (args) => {
        const status = await client(args).status();
        if (args.json) json(status.deployments.flatMap((d) => d.jobs));
        else out(formatJobs(status));
      },
    )
    .command(
      'scale <deployment>',
      'Set max nodes now (lowering drains and cancels the surplus, pending first)',
      (y) =>
        y
          .positional('deployment', { type: 'string', demandOption: true })
          .option('max-nodes', { type: 'number', demandOption: true }),
      async (args) => {
        const result = await client(args).scale(args.deployment, args.maxNodes);
        out(
          `${result.deployment}: max nodes ${result.previousMaxNodes} → ${result.maxNodes}${
            result.cancelled.length > 0 ? `; cancelled ${result.cancelled.join(', ')}` : ''
          }`,
        );
      },
    )
    .command(
      'drain <id>',
      'Drain a worker (out of routing) or a job (drain, then cancel; it is replaced)',
      (y) => y.positional('id', { type: 'string', demandOption: true }),
      async (args) => {
        const c = client(args);
        const status = await c.status();
        const isWorker = status.deployments.some((d) => d.workers.some((w) => w.id === args.id));
        const result = isWorker ? await c.drainWorker(args.id) : await c.drainJob(args.id);
        out(
          isWorker
            ? `worker ${args.id} draining`
            : `job ${args.id}: draining ${result.drained.length} worker(s)${
                result.jobId ? '; it is cancelled once idle and replaced' : ''
              }`,
        );
      },
    )
    .command(
      'logs <id>',
      "Tail a job's batch log or a worker's engine log",
      (y) =>
        y
          .positional('id', { type: 'string', demandOption: true })
          .option('follow', { alias: 'f', type: 'boolean', default: false })
          .option('bytes', { type: 'number', default: 16 * 1024, describe: 'Tail size' }),
      async (args) => {
        const c = client(args);
        let logs = await c.logs(args.id, { bytes: args.bytes });
        io.stdout(logs.text);
        while (args.follow && !io.signal?.aborted) {
          await sleep(1000, undefined, { signal: io.signal }).catch(() => undefined);
          if (io.signal?.aborted) break;
          logs = await c.logs(args.id, { since: logs.offset });
          if (logs.text) io.stdout(logs.text);
        }
      },
    )
    .command(
      'stop',
      'Stop the scheduler (and cancel its jobs with --cancel-jobs)',
      (y) => y.option('cancel-jobs', { type: 'boolean', default: false }),
      async (args) => {
        const result = await client(args).stop({ cancelJobs: args.cancelJobs });
        out(`scheduler stopping${result.cancelJobs ? ' and cancelling its jobs' : ''}`);
      },
    )
    .command(
      'events',
      'Recent lifecycle events',
      (y) =>
        y
          .option('limit', { type: 'number', default: 50 })
          .option('json', { type: 'boolean', default: false }),
      async (args) => {
        const { events } = await client(args).events({ limit: args.limit });
        if (args.json) return json(events);
        out(
          table(
            ['TIME', 'EVENT', 'JOB', 'WORKER', 'REASON'],
            events.map((e) => [
              new Date(e.at).toISOString().slice(11, 19),
              e.type,
              e.jobId ?? '',
              e.workerId ?? '',
              e.reason ?? '',
            ]),
          ),
        );
      },
    )
    .command(
      'dashboard',
      'Print the dashboard URL (with the admin key, to open once in a browser)',
      (y) => y,
      async (args) => {
        const key = adminKeyOf(args);
        const url = `${args.schedulerUrl.replace(/\/+$/, '')}/dashboard`;
        // Checks that the scheduler is up and the key is right before handing out the URL.
        await client(args).status();
        out(key === undefined ? url : `${url}?key=${encodeURIComponent(key)}`);
      },
    )
    .demandCommand(1, 'Say which command: es status, es workers, es jobs, es scale ...')
    .strict()
    .help()
    .version(false)
    .exitProcess(false)
    .fail((message, error) => {
      if (error) throw error;
      io.stderr(`es: ${message}\nRun \`es --help\` for the commands.\n`);
      code = 2;
    });

  try {
    await parser.parseAsync(argv, {}, (_error, _argv, output) => {
      if (output) io.stdout(`${output}\n`);
    });
  } catch (error) {
    if (error instanceof ClientError) {
      io.stderr(`es: ${error.message}\n`);
      return error.code === 'bad_input' ? 2 : 1;
    }
    io.stderr(`es: ${(error as Error).message}\n`);
    return 1;
  }
  return code;
}
