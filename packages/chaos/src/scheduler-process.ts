/**
 * The scheduler under test as a real child process (`apps/scheduler/dist/cli.mjs`), its
 * JSON log appended to one file across restarts, the data plane it starts (`es-proxy`, which
 * outlives it), plus samplers of its capacity and of the SLURM queue.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { deriveKeys, readDataPlaneState as readStateFile, type DataPlaneState } from '@es/protocol';
import { repoRoot, slurmEnv } from '@es/testkit';
import { readEngineLog, type EngineLog } from './engine-log.js';
import { ChaosError } from './errors.js';
import {
  parseJournal,
  parseSchedulerLog,
  type CapacitySample,
  type JournalEntry,
  type QueueSample,
  type SchedulerEvent,
} from './history.js';

export interface SchedulerProcessOptions {
  backend: 'slurm' | 'local';
  logDir: string;
  schedulerId: string;
  maxNodes: number;
  model?: string;
  tensorParallelSize?: number;
  /** Port to bind; 0 (default) picks one, and restarts reuse the one picked. */
  port?: number;
  /** `--engine-extra-args` for the mock engine (default `--tokens-per-second 50`). */
  engineExtraArgs?: string;
  /** More scheduler flags. */
  extraArgs?: string[];
  /** Environment additions (e.g. a PATH with sbatch shims, `ES_PLANT_FAULTS`). */
  env?: Record<string, string>;
  /**
   * `--stall-timeout` in seconds: a started generation silent this long is cut and continued
   * elsewhere (default 3, so a frozen engine's streams move on within the fault's window;
   * at 50 tokens/s a healthy stream is never silent for more than a few tens of ms).
   */
  stallTimeoutS?: number;
  /**
   * `--proxy-processes`: data-plane processes serving the client port (`es-proxy`, detached:
   * it outlives a scheduler SIGKILL and the restarted scheduler re-adopts it); 0 serves `/v1`
   * in the scheduler process. Default: the scheduler's own default.
   */
  proxyProcesses?: number;
}

/** A scheduler child process that can be killed and started again on the same port. */
export interface SchedulerProcess {
  readonly url: string;
  readonly port: number;
  /** The worker listener's URL (its own thread and port), where the workers report. */
  readonly workerUrl: string;
  /** Its port: restarts reuse it, as they reuse {@link port}. */
  readonly workerPort: number;
  readonly pid: number;
  /**
   * The scheduler's own listener (admin API, `/health` of the control plane, watch stream):
   * the control port with a separate data plane, else {@link url}.
   */
  readonly controlUrl: string;
  /** The data plane's state file (`<logDir>/data-plane.json`), undefined without one. */
  dataPlane(): DataPlaneState | undefined;
  readonly logFile: string;
  /** SLURM job name of this scheduler's jobs. */
  readonly jobName: string;
  /**
   * The admin key it was started with (`--admin-key` among the extra flags, else the admin
   * token derived from `<log dir>/secret`): `/workers` shows engine addresses only with it.
   */
  adminKey(): string;
  /**
   * Lifecycle events so far (all incarnations), from the scheduler's log and the data plane's
   * (`<logDir>/es-proxy.log`: its processes log their own continuations), in time order.
   */
  events(): SchedulerEvent[];
  /** The routing journal (`ES_ROUTING_JOURNAL`) so far, every incarnation, in file order. */
  readonly journalFile: string;
  journal(): JournalEntry[];
  /** Where every engine of this scheduler's workers logs its requests (`--request-log-dir`). */
  readonly engineLogDir: string;
  /** The engines' request logs so far. */
  engineLog(): EngineLog;
  /** Send a signal to the current process; resolves once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again (same flags, port, log dir, id); resolves once it serves. */
  restart(): Promise<void>;
  /**
   * End it for good: SIGTERM the scheduler, then its data plane (left serving by a scheduler
   * that leaves its jobs running), SIGKILL to the data plane's group after `graceMs`.
   */
  stop(graceMs?: number): Promise<void>;
}

const CLI = join(repoRoot, 'apps', 'scheduler', 'dist', 'cli.mjs');

interface Urls {
  url: string;
  workerUrl: string;
  controlUrl: string;
}

function readUrls(logFile: string, from: number): Urls | undefined {
  if (!existsSync(logFile)) return undefined;
  // `from` is a byte offset (the log holds multi-byte characters).
  const text = readFileSync(logFile).subarray(from).toString('utf8');
  for (const line of text.split('\n')) {
    if (!line.includes('serving /v1 on')) continue;
    try {
      const { url, workersReachUs, controlUrl } = JSON.parse(line) as {
        url?: unknown;
        workersReachUs?: unknown;
        controlUrl?: unknown;
      };
      if (typeof url === 'string' && typeof workersReachUs === 'string') {
        return {
          url,
          workerUrl: workersReachUs,
          controlUrl: typeof controlUrl === 'string' ? controlUrl : url,
        };
      }
    } catch {
      // A line cut by SIGKILL: keep looking.
    }
  }
  return undefined;
}

/**
 * Start the scheduler (mock engines) and wait until it serves.
 * @example
 * const s = await startSchedulerProcess({ backend: 'slurm', logDir, schedulerId: 'chaos1', maxNodes: 3 });
 */
export async function startSchedulerProcess(
  options: SchedulerProcessOptions,
): Promise<SchedulerProcess> {
  // Owner-only: the scheduler refuses a log directory open to other users.
  mkdirSync(options.logDir, { recursive: true, mode: 0o700 });
  const logFile = join(options.logDir, 'scheduler.log');
  const journalFile = join(options.logDir, 'routing-journal.jsonl');
  // Workers run on this host (the dev cluster's nodes share it), so one directory serves all.
  const engineLogDir = join(options.logDir, 'engine-requests');
  const model = options.model ?? 'mock-model';
  let port = options.port ?? 0;
  let url = '';
  let controlUrl = '';
  let workerPort = 0;
  let workerUrl = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async () => {
    const from = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a');
    const args = [
      CLI,
      '--backend',
      options.backend,
      '--engine',
      'mock',
      '--model',
      model,
      '--max-nodes',
      String(options.maxNodes),
      '--tensor-parallel-size',
      String(options.tensorParallelSize ?? 4),
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--worker-port',
      String(workerPort),
      '--log-dir',
      options.logDir,
      '--scheduler-id',
      options.schedulerId,
      '--node-acquire-interval',
      '1',
      '--health-check-interval',
      '1',
      '--heartbeat-timeout',
      '4',
      `--engine-extra-args=${options.engineExtraArgs ?? '--tokens-per-second 50'} --request-log-dir ${engineLogDir}`,
      '--stall-timeout',
      String(options.stallTimeoutS ?? 3),
      ...(options.proxyProcesses === undefined
        ? []
        : ['--proxy-processes', String(options.proxyProcesses)]),
      ...(options.extraArgs ?? []),
    ];
    const proc = spawn(process.execPath, args, {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...slurmEnv(), ES_ROUTING_JOURNAL: journalFile, ...options.env },
    });
    closeSync(fd);
    child = proc;
    exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const found = readUrls(logFile, from);
      if (found !== undefined) {
        url = found.url;
        controlUrl = found.controlUrl;
        port = Number(new URL(found.url).port);
        workerUrl = found.workerUrl;
        workerPort = Number(new URL(found.workerUrl).port);
        return;
      }
      if (proc.exitCode !== null || Date.now() > deadline) {
        const tail = readFileSync(logFile).subarray(from).toString('utf8').slice(-2000);
        throw new ChaosError('start_failed', `the scheduler did not start: ${tail}`);
      }
      await sleep(100);
    }
  };
  await launch();

  return {
    get url() {
      return url;
    },
    get port() {
      return port;
    },
    get workerUrl() {
      return workerUrl;
    },
    get workerPort() {
      return workerPort;
    },
    get pid() {
      return child?.pid ?? -1;
    },
    get controlUrl() {
      return controlUrl;
    },
    dataPlane: () => readDataPlaneState(options.logDir),
    logFile,
    jobName: `es-${options.schedulerId}-${model}`,
    adminKey: () => adminKeyOf(options),
    events: () => {
      const dataPlaneLog = join(options.logDir, 'es-proxy.log');
      return [logFile, dataPlaneLog]
        .flatMap((file) => (existsSync(file) ? parseSchedulerLog(readFileSync(file, 'utf8')) : []))
        .sort((a, b) => a.time - b.time);
    },
    journalFile,
    journal: () => (existsSync(journalFile) ? parseJournal(readFileSync(journalFile, 'utf8')) : []),
    engineLogDir,
    engineLog: () => readEngineLog(engineLogDir),
    async kill(signal = 'SIGTERM') {
      if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
    restart: launch,
    async stop(graceMs = 15_000) {
      const plane = readDataPlaneState(options.logDir);
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      if (plane !== undefined) await endDataPlane(plane, graceMs);
    },
  };
}

/** `<logDir>/data-plane.json`, undefined when absent or not a data plane's state. */
export function readDataPlaneState(logDir: string): DataPlaneState | undefined {
  return readStateFile(join(logDir, 'data-plane.json'));
}

/** Whether `pid` is an `es-proxy` (not a pid the kernel gave to another program since). */
export function isEsProxy(pid: number): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('es-proxy') || a.includes('apps/proxy/dist/'));
  } catch {
    return false;
  }
}

/** SIGTERM the data plane's primary; SIGKILL its process group if it is not gone in time. */
async function endDataPlane(plane: DataPlaneState, graceMs: number): Promise<void> {
  if (!isEsProxy(plane.pid)) return;
  const signal = (pid: number, name: NodeJS.Signals) => {
    try {
      process.kill(pid, name);
      return true;
    } catch {
      return false;
    }
  };
  signal(plane.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && isEsProxy(plane.pid)) await sleep(100);
  // Detached: the primary leads its own process group, its workers are in it.
  signal(-plane.pid, 'SIGKILL');
}

/** `--admin-key <key>` / `--admin-key=<key>` of the extra flags, else the secret's admin token. */
function adminKeyOf(options: SchedulerProcessOptions): string {
  const args = options.extraArgs ?? [];
  for (const [i, arg] of args.entries()) {
    if (arg === '--admin-key' && args[i + 1] !== undefined) return args[i + 1]!;
    if (arg.startsWith('--admin-key=')) return arg.slice('--admin-key='.length);
  }
  return deriveKeys(readFileSync(join(options.logDir, 'secret'), 'utf8')).adminToken;
}

/** A running sampler; `stop()` resolves to what it saw. */
export interface Sampler<T> {
  readonly samples: T[];
  stop(): Promise<T[]>;
}

function sampleEvery<T>(intervalMs: number, take: () => Promise<T | undefined>): Sampler<T> {
  const samples: T[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const sample = await take();
      if (sample !== undefined) samples.push(sample);
      await sleep(intervalMs);
    }
  })();
  return {
    samples,
    async stop() {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

/** Samples `GET /health` → `ready_workers` (an unreachable scheduler counts as 0 ready). */
export function sampleCapacity(url: () => string, intervalMs = 250): Sampler<CapacitySample> {
  return sampleEvery(intervalMs, async () => {
    const time = Date.now();
    try {
      const response = await fetch(`${url()}/health`, { signal: AbortSignal.timeout(2_000) });
      const body = (await response.json()) as { ready_workers?: number };
      return { time, ready: body.ready_workers ?? 0 };
    } catch {
      return { time, ready: 0 };
    }
  });
}

/** Parses `squeue -h -o '%i %T'` lines. */
export function parseQueue(text: string): Record<string, string> {
  const jobs: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const [id, state] = line.trim().split(/\s+/);
    if (id && state) jobs[id] = state;
  }
  return jobs;
}

/** Samples the jobs named `jobName` with squeue (a failed squeue records nothing). */
export function sampleQueue(jobName: string, intervalMs = 500): Sampler<QueueSample> {
  return sampleEvery(intervalMs, async () => {
    const time = Date.now();
    const result = await execa('squeue', ['-h', '-n', jobName, '-o', '%i %T'], {
      env: slurmEnv(),
      reject: false,
      timeout: 5_000,
    });
    if (result.exitCode !== 0) return undefined;
    return { time, jobs: parseQueue(String(result.stdout)) };
  });
}
