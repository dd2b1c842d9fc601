/**
 * The scheduler's command line: every flag of the seed's scheduler with the same meaning,
 * plus the options this implementation adds. Parsing only; `resolveConfig` validates and
 * merges with the config file.
 */
import yargs from 'yargs';
import { ROUTING_POLICIES } from '@es/pool';
import { ENGINE_KINDS } from '@es/protocol';
import { BACKENDS, ConfigError, closest, type CliOverrides } from '@es/scheduler';

/**
 * The command as it works from the repository root after `bash scripts/run.sh`: what
 * `--help` and the error messages print.
 */
export const SCHEDULER_COMMAND = 'scripts/es-scheduler';

/**
 * Flags whose value is handed on to another program and usually starts with "-": the next
 * word is their value whatever it looks like, as in the seed
 * (`--engine-extra-args "--max-num-seqs 256"`). Every other flag keeps yargs' strict
 * parsing, so an unknown flag is still an error.
 */
const PASS_THROUGH_FLAGS = new Set([
  '--engine-extra-args',
  '--engineExtraArgs',
  '--slurm-extra',
  '--slurmExtra',
]);

/** `--engine-extra-args VALUE` → `--engine-extra-args=VALUE` (and `--slurm-extra`). */
export function joinPassThroughValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] as string;
    if (word === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const value = argv[i + 1];
    if (PASS_THROUGH_FLAGS.has(word) && value !== undefined) {
      out.push(`${word}=${value}`);
      i++;
    } else {
      out.push(word);
    }
  }
  return out;
}

/**
 * The examples of `--help`, in the epilog rather than yargs' two-column examples: a command
 * there is wrapped to the terminal and cannot be pasted. Here each is a bash line (with
 * `\` continuations) short enough for an 80-column terminal, runnable from the repository
 * root as printed.
 */
const EXAMPLES = `Examples:
  # Serve Llama on up to 16 nodes with TP=4 (2 instances per 8-GPU node)
  ${SCHEDULER_COMMAND} --model meta-llama/Llama-3-70B-Instruct \\
      --tensor-parallel-size 4 --max-nodes 16
  # Use SGLang
  ${SCHEDULER_COMMAND} --model Qwen/Qwen3-32B --engine sglang \\
      --tensor-parallel-size 4 --max-nodes 8
  # Pass flags to the engine (the next word is taken as it is)
  ${SCHEDULER_COMMAND} --model meta-llama/Llama-3-8B-Instruct \\
      --engine-extra-args "--max-num-seqs 256"
  # Settings (or several deployments) from JSON, e.g. a file the original wrote
  ${SCHEDULER_COMMAND} --config examples/h200-lowest.json
  # Rehearse on this machine: no SLURM, no GPU
  ${SCHEDULER_COMMAND} --backend local --engine mock --model mock-model`;

const OPTIONS = {
  config: {
    type: 'string',
    describe:
      'JSON config file (seed snake_case or camelCase keys, null = unset, a file the original tool wrote loads as it is; may hold several "deployments")',
  },
  model: { type: 'string', describe: 'Model path or hub id to serve' },
  engine: {
    choices: ENGINE_KINDS,
    describe: 'Inference engine (mock: the built-in engine, no GPU)',
  },
  'served-model-name': {
    type: 'string',
    describe: 'Name clients use as "model" (default: the model path)',
  },
  qos: { type: 'string', describe: 'SLURM QoS' },
  partition: { type: 'string', describe: 'SLURM partition' },
  account: { type: 'string', describe: 'SLURM account' },
  constraint: { type: 'string', describe: 'SLURM --constraint' },
  exclusive: { type: 'boolean', describe: 'Request whole nodes (--exclusive)' },
  'whole-node-gpus': {
    type: 'boolean',
    describe:
      "Request whole nodes and every GPU on them (sbatch --exclusive --gpus-per-node=<gpus-per-node>, a minimum): each worker runs as many engines as its node's GPUs hold, for partitions whose nodes differ in GPU count",
  },
  'max-nodes': { type: 'number', describe: 'Most SLURM nodes to hold at once (default 1)' },
  'min-nodes': {
    type: 'number',
    describe:
      'Fewest nodes to hold whatever the load (default: --max-nodes, always hold them). Below --max-nodes the deployment scales with its load; 0 scales to zero and starts a node on the first request',
  },
  'target-in-flight': {
    type: 'number',
    describe:
      'Scaling: requests in flight and queued per engine instance to aim at (default 8; with --min-nodes)',
  },
  'target-kv-cache': {
    type: 'number',
    describe:
      'Scaling: mean KV-cache use of the ready instances, in (0, 1], above which a node is added (default 0.9; with --min-nodes)',
  },
  'scale-window': {
    type: 'number',
    describe: 'Scaling: seconds over which the load is averaged (default 30; with --min-nodes)',
  },
  'scale-up-delay': {
    type: 'number',
    describe:
      'Scaling: seconds the load must stay above the target before nodes are added (default 60; with --min-nodes)',
  },
  'scale-down-delay': {
    type: 'number',
    describe:
      'Scaling: seconds the load must stay below the target before nodes are drained and given back (default 600; with --min-nodes)',
  },
  'gpus-per-node': { type: 'number', describe: 'GPUs per node (default 8)' },
  'tensor-parallel-size': {
    type: 'number',
    describe: 'GPUs per engine instance; instances per node = gpus-per-node / TP',
  },
  'gpu-memory-utilization': {
    type: 'number',
    describe: 'Engine GPU memory fraction (default 0.9)',
  },
  'max-model-len': { type: 'number', describe: 'Engine context length' },
  'engine-extra-args': {
    type: 'string',
    describe:
      'Extra engine arguments, quoted like a shell; the next word is the value even when it starts with "--" (--engine-extra-args "--max-num-seqs 256")',
  },
  'drain-grace': {
    type: 'number',
    describe:
      "Workers' --drain-grace: seconds in-flight requests may finish after SIGTERM (default 15; keep it a few seconds under the partition's preemption GraceTime)",
  },
  'handover-margin': {
    type: 'number',
    describe:
      "Workers' --handover-margin: seconds before the end of the drain grace at which generations still running are continued on other workers (default 5, or half the drain grace when under 10; < --drain-grace)",
  },
  'time-limit': { type: 'string', describe: 'SLURM time limit per node job (e.g. 4:00:00)' },
  'slurm-extra': {
    type: 'string',
    describe:
      'Extra sbatch flags, semicolon-separated; the next word is the value even when it starts with "--"',
  },
  'conda-env': { type: 'string', describe: 'Conda environment to activate on the nodes' },
  'project-root': {
    type: 'string',
    describe:
      "This project's checkout as the nodes see it (same path, shared file system): node jobs run its apps/worker/dist/cli.mjs (default: the checkout this scheduler runs from; a path without that file, e.g. the original tool's, is ignored with a warning)",
  },
  'venv-path': { type: 'string', describe: 'Virtualenv to activate on the nodes' },
  routing: {
    choices: ROUTING_POLICIES,
    describe: 'Routing policy (default least-outstanding)',
  },
  port: { type: 'number', describe: 'Port of the scheduler (default 8780)' },
  'worker-port': {
    type: 'number',
    describe:
      'Port the workers report to (registrations, heartbeats), served from a thread of its own so that a client flood on --port cannot delay them (default 0: any free port, written to <log-dir>/worker-url, which the workers follow; fix it when a firewall sits between nodes and scheduler)',
  },
  'proxy-processes': {
    type: 'number',
    describe:
      'es-proxy processes serving --port (/v1, and everything else forwarded to the scheduler), started detached so that serving outlives a scheduler crash or restart; a restarted scheduler re-adopts them (default: half the cores, 1 to 4; 0: serve --port in the scheduler process itself)',
  },
  'control-port': {
    type: 'number',
    describe:
      "Port of the scheduler's own listener when --proxy-processes >= 1 (admin API, /metrics, routing watch stream of the es-proxy processes; default 0: any free port, written to <log-dir>/control-url, which es-proxy follows)",
  },
  host: {
    type: 'string',
    describe: 'Address to listen on (default 0.0.0.0; 127.0.0.1 for --backend local)',
  },
  'worker-base-port': {
    type: 'number',
    describe: 'First engine port on each node (default 8001)',
  },
  'heartbeat-timeout': {
    type: 'number',
    describe:
      'Seconds without heartbeat before a worker is gone (default max(30, 3 × --health-check-interval)); must be longer than the interval',
  },
  'health-check-interval': {
    type: 'number',
    describe:
      'Seconds between worker heartbeats and health checks (default 5, or a third of --heartbeat-timeout when that is under 15)',
  },
  'node-acquire-interval': {
    type: 'number',
    describe: 'Seconds between reconcile ticks (default 10)',
  },
  'startup-timeout': {
    type: 'number',
    describe:
      'Cancel a running job whose worker has not registered after this many seconds (default 1800)',
  },
  'log-dir': {
    type: 'string',
    describe:
      'Directory for job scripts, logs and the secret (default ./logs); created 0700, and an existing one open to other users or owned by another is refused',
  },
  backend: {
    choices: BACKENDS,
    describe: 'slurm, local (worker processes on this machine) or auto (slurm when sbatch exists)',
  },
  'local-nodes': {
    type: 'number',
    describe: 'Simulated nodes for --backend local (default 4)',
  },
  'api-key': {
    type: 'string',
    array: true,
    describe:
      'Client API key for /v1 (repeatable). Visible in ps to every user of the machine: prefer --api-key-file or env ES_API_KEYS (comma-separated; ES_API_KEY too)',
  },
  'api-key-file': {
    type: 'string',
    array: true,
    describe:
      'File of client API keys for /v1, one per line (blank lines and # comments ignored); mode 600 and owned by you, like the secret file (repeatable; api_key_file in a config file)',
  },
  'cors-origin': {
    type: 'string',
    array: true,
    describe:
      "Origin whose web pages may call /v1 from a browser (repeatable; scheme://host[:port], or '*' for any, as the original allowed; default: none, CORS off)",
  },
  'admin-key': {
    type: 'string',
    describe:
      'Key for the admin API. Visible in ps: prefer --admin-key-file or env ES_ADMIN_KEY (default: the token derived from the secret file)',
  },
  'admin-key-file': {
    type: 'string',
    describe:
      'File holding the admin key on one line (# comments ignored); mode 600 and owned by you (admin_key_file in a config file)',
  },
  'secret-file': {
    type: 'string',
    describe: 'Shared secret (0600) for worker and engine keys (default <log-dir>/secret, created)',
  },
  'scheduler-id': {
    type: 'string',
    describe: 'Name that tags this scheduler\'s jobs, so a restart re-adopts them (default "es")',
  },
  'max-continuations': {
    type: 'number',
    describe:
      'Times a generation cut mid-way (engine or worker died, stalled, handed over) is continued on another worker, token-exact (default 3; 0 = off)',
  },
  'stall-timeout': {
    type: 'number',
    describe:
      'Seconds a started generation may send nothing before it is cut and continued elsewhere (default 30; 0 = never)',
  },
  'max-connections': {
    type: 'number',
    describe:
      "Open connections at most on the client port (clients, admin) and, separately, on the workers' listener; past it new connections are closed at once, open ones keep working (default 16384, above the 10,000 idle streams the proxy holds; 0 = no cap)",
  },
  'body-budget-mb': {
    type: 'number',
    describe:
      'MiB of memory for request bodies, all requests together, each charged 4 × its size (bytes, text, parsed, upstream copy); a body that does not fit waits up to 10 s, then gets 503 with Retry-After (default 128; at least 128: 4 × the largest body, 32 MiB)',
  },
  'client-idle-timeout': {
    type: 'number',
    describe:
      'Seconds a client may read nothing of its response (a stream it stopped reading) before it is disconnected and its engine request aborted (default 60; 0 = never)',
  },
  'cold-start-wait': {
    type: 'number',
    describe:
      "Seconds a request for a deployment that scales from zero (--min-nodes 0) may wait while it has no worker, for a node to start and load its model; then 503 with Retry-After carrying the expected start (default 540, under the openai client's 10 min timeout; 0 = 503 at once; at most 86400)",
  },
  'expose-selected-endpoint': {
    type: 'boolean',
    describe:
      "Send the answering engine's address to clients as x-elastic-selected-endpoint, as the original did (default: off; x-elastic-selected-worker-id is always sent)",
  },
  'release-requeued': {
    type: 'boolean',
    describe:
      "Start a preempted job's requeue at once on a free node, lifting the begin time SLURM gives it (about 120 s; scontrol update JobId=<id> StartTime=now); when refused, cancel and replace it (default true; --no-release-requeued waits)",
  },
  'cancel-on-exit': {
    type: 'boolean',
    describe: 'Cancel all jobs when the scheduler stops (default: keep them for re-adoption)',
  },
} as const;

const FLAG_NAMES = [...Object.keys(OPTIONS), 'help'];

/** "Unknown argument: max-nodez" → with the closest flag, or how to pass a value that starts with "-". */
function explainUnknown(message: string): string {
  return message.replace(/(Unknown arguments?: )(.*)/, (_: string, _head: string, list: string) => {
    // yargs names an unknown flag in both spellings (bogus-flag, bogusFlag): keep the dashed one.
    const names = list
      .split(', ')
      .filter(
        (n) =>
          !/[A-Z]/.test(n) || !list.includes(n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)),
      );
    const explained = names.map((n) => {
      const suggestion = closest(n, FLAG_NAMES);
      return suggestion
        ? `${n} (did you mean --${suggestion}?)`
        : `${n} (a value that starts with "-" needs the --flag=value form, e.g. --api-key=-k1; --engine-extra-args and --slurm-extra take the next word as it is)`;
    });
    return `${names.length > 1 ? 'Unknown arguments: ' : 'Unknown argument: '}${explained.join(', ')}`;
  });
}

/** Parse argv into command-line overrides (only flags that were given are set). */
export async function parseFlags(argv: string[]): Promise<CliOverrides> {
  const parsed = await yargs(joinPassThroughValues(argv))
    .scriptName(SCHEDULER_COMMAND)
    .usage(
      '$0 [options]\n\nKeeps up to --max-nodes GPU nodes serving and exposes one OpenAI-compatible /v1 endpoint.\nIn a checkout, run it from the repository root as scripts/es-scheduler (it builds the checkout first when that has not been done).',
    )
    .strict()
    .options(OPTIONS)
    .epilog(EXAMPLES)
    .fail((message, error) => {
      throw (
        error ??
        new ConfigError(
          `${explainUnknown(message ?? '')}. Run ${SCHEDULER_COMMAND} --help for the list of flags.`,
        )
      );
    })
    .help()
    .version(false)
    .wrap(Math.min(120, process.stdout.columns ?? 100))
    .parseAsync();

  // yargs sets both spellings of each flag given; keep the camelCase ones.
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!key.includes('-') && key !== '_' && key !== '$0' && value !== undefined) out[key] = value;
  }
  return out as CliOverrides;
}
