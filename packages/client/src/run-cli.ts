import { setTimeout as sleep } from 'node:timers/promises';
import yargs from 'yargs';
import { createSchedulerClient, type SchedulerClient } from './client.js';
import { ClientError } from './errors.js';
import { formatJobs, formatPublicStatus, formatStatus, formatWorkers, table } from './format.js';
import { findAdminKey, keyFromFile, locateScheduler, type SchedulerLocation } from './locate.js';
import type { ChatResponse, ClusterStatusResponse, StatusResponse } from './types.js';

/** Where the CLI writes and what it reads (injected so tests run it in-process). */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  /** Ends `--watch` and `--follow`. */
  signal?: AbortSignal;
  /** Whether stdout is a terminal (`--watch` redraws in place only then). */
  isTTY?: boolean;
  /** Directory relative paths (`./logs`, `ES_LOG_DIR`) start from (default the process's). */
  cwd?: string;
}

interface GlobalArgs {
  schedulerUrl: string | undefined;
  adminKey: string | undefined;
  adminKeyFile: string | undefined;
  secretFile: string | undefined;
  apiKey: string | undefined;
  apiKeyFile: string | undefined;
}

/** The seed client's `test` defaults (the README's example message). */
const TEST_DEFAULTS = { prompt: 'Hello!', maxTokens: 256, temperature: 0.7 } as const;

/**
 * Run the `es` CLI with `argv` (without `node es`). Resolves to the exit code: 0 ok,
 * 1 the scheduler refused or failed, 2 usage errors.
 * @example
 * const code = await runCli(['status', '--json'], { stdout: (t) => process.stdout.write(t),
 *   stderr: (t) => process.stderr.write(t), env: process.env });
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let code = 0;
  let location: SchedulerLocation | undefined;
  const out = (text: string) => io.stdout(text.endsWith('\n') ? text : `${text}\n`);
  const input = (args: GlobalArgs) => ({
    url: args.schedulerUrl,
    adminKey: args.adminKey,
    adminKeyFile: args.adminKeyFile,
    secretFile: args.secretFile,
    env: io.env,
    ...(io.cwd === undefined ? {} : { cwd: io.cwd }),
  });
  const locate = (args: GlobalArgs) => (location = locateScheduler(input(args)));
  const adminKeyOf = (args: GlobalArgs) => findAdminKey(input(args));
  // --api-key, else the first key of --api-key-file, else ES_API_KEY.
  const apiKeyOf = (args: GlobalArgs) =>
    args.apiKey ||
    (args.apiKeyFile ? keyFromFile(args.apiKeyFile, '--api-key-file', io.cwd) : undefined) ||
    io.env.ES_API_KEY;
  const client = (args: GlobalArgs, admin = true): SchedulerClient => {
    const { url } = locate(args);
    const adminKey = admin ? adminKeyOf(args)?.key : undefined;
    const apiKey = apiKeyOf(args);
    return createSchedulerClient({
      url,
      ...(adminKey === undefined ? {} : { adminKey }),
      ...(apiKey ? { apiKey } : {}),
    });
  };
  /**
   * `es status`: the public `/cluster_status` always; with an admin key also the admin
   * status. A key found by itself (a `logs/secret` of another scheduler) that is refused
   * falls back to the public view; a key the user gave must work.
   */
  const statusView = async (
    args: GlobalArgs,
  ): Promise<{ cluster: ClusterStatusResponse; admin?: StatusResponse; note?: string }> => {
    const c = client(args, false);
    const cluster = await c.clusterStatus();
    const found = adminKeyOf(args);
    if (found === undefined) return { cluster };
    try {
      const admin = await createSchedulerClient({ url: c.url, adminKey: found.key }).status();
      return { cluster, admin };
    } catch (error) {
      if (found.explicit || !(error instanceof ClientError) || error.code !== 'unauthorized') {
        throw error;
      }
      return {
        cluster,
        note: `the admin key derived from ${found.from} was refused (another scheduler's secret?): public view only; pass --admin-key, ES_ADMIN_KEY or --secret-file`,
      };
    }
  };
  const renderStatus = (
    view: Awaited<ReturnType<typeof statusView>>,
    asJson: boolean,
    url: string,
  ): string => {
    if (asJson) return JSON.stringify(view.admin ?? view.cluster, null, 2);
    if (view.admin !== undefined) return formatStatus(view.admin, view.cluster);
    return `${formatPublicStatus(view.cluster, url)}\n\nNodes, ports and jobs need the admin key: --admin-key, ES_ADMIN_KEY or --secret-file <log dir>/secret.`;
  };
  const json = (value: unknown) => out(JSON.stringify(value, null, 2));

  const parser = yargs(argv)
    .scriptName('es')
    .usage('$0 <command> [options]\n\nOperate an Elastic Serving scheduler.')
    .option('scheduler-url', {
      alias: 'url',
      type: 'string',
      describe:
        'Scheduler URL (env ES_SCHEDULER_URL or ELASTIC_SERVING_URL; else <log dir>/scheduler-url, the log dir being ES_LOG_DIR or ./logs; else http://127.0.0.1:8780)',
    })
    .option('admin-key', {
      type: 'string',
      describe:
        'Admin key (env ES_ADMIN_KEY). Visible in ps to every user of the machine: prefer --admin-key-file or the environment',
    })
    .option('admin-key-file', {
      type: 'string',
      describe:
        'File holding the admin key (mode 600, owned by you; blank lines and # comments ignored)',
    })
    .option('secret-file', {
      type: 'string',
      default: io.env.ES_SECRET_FILE,
      describe:
        "Derive the admin key from the scheduler's secret file (env ES_SECRET_FILE; default <log dir>/secret when it exists)",
    })
    .option('api-key', {
      type: 'string',
      describe:
        'Key for /v1 when the scheduler requires one (env ES_API_KEY): models, test. Visible in ps: prefer --api-key-file or the environment',
    })
    .option('api-key-file', {
      type: 'string',
      describe:
        'File holding the key for /v1 (its first key: mode 600, owned by you; blank lines and # comments ignored)',
    })
    .command(
      'status',
      'Model, engine, TP/DP, nodes and workers (public); with the admin key also jobs, nodes and ports',
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
        const url = locate(args).url;
        if (!args.watch) {
          const view = await statusView(args);
          out(renderStatus(view, args.json, url));
          if (view.note !== undefined) io.stderr(`es: ${view.note}\n`);
          return;
        }
        while (!io.signal?.aborted) {
          const view = await statusView(args);
          const text = args.json
            ? JSON.stringify(view.admin ?? view.cluster)
            : renderStatus(view, false, url);
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
      'models',
      'The models served (GET /v1/models)',
      (y) => y.option('json', { type: 'boolean', default: false }),
      async (args) => {
        const models = await client(args, false).models();
        if (args.json) return json(models);
        out(models.data.map((m) => m.id).join('\n') || '(no model served)');
      },
    )
    .command(
      'health',
      "The scheduler's health (GET /health)",
      (y) => y,
      async (args) => json(await client(args, false).health()),
    )
    .command(
      'test',
      'Send one chat completion and print the answer and the latency',
      (y) =>
        y
          .option('model', {
            type: 'string',
            describe: 'Model to ask (default: the first one GET /v1/models lists)',
          })
          .option('prompt', { type: 'string', default: TEST_DEFAULTS.prompt })
          .option('max-tokens', { type: 'number', default: TEST_DEFAULTS.maxTokens })
          .option('temperature', { type: 'number', default: TEST_DEFAULTS.temperature })
          .option('timeout', {
            type: 'number',
            default: 300,
            describe: 'Seconds to wait for the answer',
          }),
      async (args) => {
        const bad = (flag: string, expected: string, value: number) =>
          new ClientError('bad_input', `${flag}: expected ${expected}, got ${value}`);
        if (!Number.isInteger(args.maxTokens) || args.maxTokens <= 0) {
          throw bad('--max-tokens', 'a whole number above 0', args.maxTokens);
        }
        if (!(args.temperature >= 0)) {
          throw bad('--temperature', 'a number of at least 0', args.temperature);
        }
        if (!(args.timeout > 0)) throw bad('--timeout', 'seconds above 0', args.timeout);
        const c = client(args, false);
        let model = args.model;
        if (model === undefined) {
          model = (await c.models()).data[0]?.id;
          if (model === undefined) {
            throw new ClientError(
              'not_found',
              `the scheduler at ${c.url} serves no model yet: pass --model, or wait for a ready worker (es status)`,
            );
          }
        }
        const started = performance.now();
        let answer: ChatResponse;
        try {
          answer = await c.chat(
            {
              model,
              messages: [{ role: 'user', content: args.prompt }],
              max_tokens: args.maxTokens,
              temperature: args.temperature,
            },
            { timeoutMs: args.timeout * 1000 },
          );
        } catch (error) {
          if (error instanceof ClientError && error.apiCode === 'model_not_found') {
            throw new ClientError(
              'not_found',
              `${error.message} Pass --model with one of them (es models lists them).`,
              { status: 404, apiCode: error.apiCode, cause: error },
            );
          }
          throw error;
        }
        const seconds = (performance.now() - started) / 1000;
        const choice = answer.choices[0];
        const tokens = answer.usage?.completion_tokens;
        out(
          [
            `Model:    ${answer.model}`,
            `Prompt:   ${args.prompt}`,
            ...(choice?.message.reasoning_content
              ? [`Reasoning: ${choice.message.reasoning_content}`]
              : []),
            `Answer:   ${choice?.message.content ?? ''}`,
            `Latency:  ${seconds.toFixed(2)} s${
              tokens === undefined
                ? ''
                : ` (${tokens} tokens, ${(tokens / seconds).toFixed(1)} tokens/s, finish ${choice?.finish_reason ?? '-'})`
            }`,
          ].join('\n'),
        );
      },
    )
    .command(
      'dashboard',
      'Print a one-time dashboard login link (good for one login, within a minute)',
      (y) => y,
      async (args) => {
        const url = locate(args).url;
        if (adminKeyOf(args) === undefined) {
          out(`${url}/dashboard`);
          io.stderr(
            'es: no admin key found (--admin-key-file, ES_ADMIN_KEY or --secret-file): the page asks for it\n',
          );
          return;
        }
        // Signed, and the answer checked: the token comes from the scheduler itself.
        const login = await client(args).dashboardLogin();
        out(`${url}${login.path}`);
        io.stderr(
          `es: open it within ${login.expiresInSeconds} s; it works once (a session of 12 h in that browser)\n`,
        );
      },
    )
    .demandCommand(1, 'Say which command: es status, es models, es test, es workers, es scale ...')
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
      // Say where an unreachable URL came from: often a stale file or variable.
      const from =
        error.code === 'unreachable' &&
        location !== undefined &&
        location.from !== '--url' &&
        location.from !== 'default'
          ? ` (URL from ${location.from})`
          : '';
      io.stderr(`es: ${error.message}${from}\n`);
      return error.code === 'bad_input' ? 2 : 1;
    }
    io.stderr(`es: ${(error as Error).message}\n`);
    return 1;
  }
  return code;
}
