/**
 * End-to-end harness: runs the BUILT scheduler (`apps/scheduler/dist/cli.mjs`) as a real
 * child process, the way an operator starts it, and looks at it only from outside: its
 * HTTP endpoints, its pino JSON log lines, its process tree and the SLURM queue.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deriveKeys } from '@es/protocol';
// The shared test helpers (apps/scheduler does not depend on @es/testkit; its tests run its code).
import { processAlive } from '../../../packages/testkit/src/index.js';

/** The built scheduler binary (`pnpm build` first). */
export const SCHEDULER_CLI = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));

/** Fast timings so the tests see failures in seconds, not minutes. */
export const FAST_FLAGS = [
  '--node-acquire-interval',
  '1',
  '--health-check-interval',
  '1',
  '--heartbeat-timeout',
  '4',
];

/** One pino log line of the scheduler. */
export interface LogLine {
  level: number;
  time: number;
  msg: string;
  event?: string;
  jobId?: string;
  workerId?: string;
  reason?: string;
  [key: string]: unknown;
}

/** A worker as the seed's `/cluster_status` shows it. */
export interface SeedWorker {
  worker_id: string;
  hostname: string;
  ip_address: string;
  port: number;
  base_url: string;
  status: 'READY' | 'LOADING' | 'OFFLINE';
  engine: string;
  model_name: string;
  n_gpus: number;
  tensor_parallel_size: number;
  slurm_job_id: string;
  registered_at: string;
  last_heartbeat: string;
  requests_served: number;
  state: string;
  gpus: number[];
}

/** The seed's `/cluster_status` body. */
export interface ClusterStatus {
  model: string;
  engine: string;
  max_nodes: number;
  tensor_parallel_size: number;
  dp_per_node: number;
  total_nodes_active: number;
  total_workers: number;
  ready_workers: number;
  loading_workers: number;
  offline_workers: number;
  pending_slurm_jobs: number;
  workers: SeedWorker[];
  [key: string]: unknown;
}

/** How the scheduler process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A scheduler child process. */
export interface SchedulerProcess {
  pid: number;
  port: number;
  url: string;
  logDir: string;
  /** Every JSON log line so far (stdout), in order. */
  logs: LogLine[];
  /** Everything written to stderr. */
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** GET a JSON endpoint of the scheduler. */
  get<T = unknown>(path: string): Promise<T>;
  clusterStatus(): Promise<ClusterStatus>;
  /** Ids of the workers `/workers` lists as ready. */
  readyWorkerIds(): Promise<string[]>;
  /** SIGTERM (or `signal`), then SIGKILL after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
}

/** Options of {@link startSchedulerProcess}. */
export interface SchedulerProcessOptions {
  /** Flags after the binary; `--port` and `--log-dir` are added unless given. */
  args: string[];
  /** Added to this process's environment. */
  env?: Record<string, string>;
  logDir: string;
  port?: number;
  /** How long to wait for `/health` (default 20 s). */
  readyTimeoutMs?: number;
}

const started = new Set<ChildProcess>();
/** The log directories of the schedulers started: their es-proxy may outlive them. */
const logDirs = new Set<string>();

/** Any port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run the scheduler to completion (for flag and config errors). */
export function runSchedulerToExit(
  args: string[],
  timeoutMs = 15_000,
): Promise<Exit & { stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCHEDULER_CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`scheduler did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      started.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Start the built scheduler and wait until `/health` answers. */
export async function startSchedulerProcess(
  options: SchedulerProcessOptions,
): Promise<SchedulerProcess> {
  const port = options.port ?? (await freePort());
  // Owner-only, as the scheduler requires of an existing log directory.
  mkdirSync(options.logDir, { recursive: true, mode: 0o700 });
  logDirs.add(options.logDir);
  const args = [...options.args];
  if (!args.includes('--port')) args.push('--port', String(port));
  if (!args.includes('--log-dir')) args.push('--log-dir', options.logDir);
  const child = spawn(process.execPath, [SCHEDULER_CLI, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.add(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error('the scheduler did not start');
  const logs: LogLine[] = [];
  let stderr = '';
  let partial = '';
  child.stdout.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ level: 0, time: Date.now(), msg: line });
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<Exit>((resolve) =>
    child.on('exit', (code, signal) => {
      started.delete(child);
      resolve({ code, signal });
    }),
  );
  let exit: Exit | undefined;
  void exited.then((e) => (exit = e));

  const url = `http://127.0.0.1:${port}`;
  // The seed routes show worker ids, nodes and addresses only to the admin key: the
  // scheduler's --admin-key, else the token derived from its secret file (once it exists).
  const adminHeaders = (): Record<string, string> => {
    const flag = args.indexOf('--admin-key');
    if (flag >= 0 && args[flag + 1] !== undefined) {
      return { authorization: `Bearer ${args[flag + 1]}` };
    }
    const secretFlag = args.indexOf('--secret-file');
    const secretFile = secretFlag >= 0 ? args[secretFlag + 1] : join(options.logDir, 'secret');
    if (secretFile === undefined || !existsSync(secretFile)) return {};
    return { authorization: `Bearer ${deriveKeys(readFileSync(secretFile, 'utf8')).adminToken}` };
  };
  const get = async <T>(path: string): Promise<T> => {
    const response = await fetch(`${url}${path}`, {
      headers: adminHeaders(),
      signal: AbortSignal.timeout(5_000),
    });
    if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
    return (await response.json()) as T;
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
  for (;;) {
    if (exit) {
      throw new Error(
        `scheduler exited (${exit.code ?? exit.signal}) before serving; stderr: ${stderr}; log: ${logs
          .map((l) => l.msg)
          .join(' | ')}`,
      );
    }
    try {
      await get('/health');
      // es-proxy answers /health on the client port before the scheduler has seen it listen
      // (or, re-adopted, as soon as the scheduler starts): ready is when it says it serves.
      if (!logs.some((l) => l.msg.startsWith('serving /v1'))) throw new Error('not serving yet');
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`scheduler not healthy within the timeout: ${String(error)}`, {
          cause: error,
        });
      }
      await sleep(100);
    }
  }

  return {
    pid,
    port,
    url,
    logDir: options.logDir,
    logs,
    stderr: () => stderr,
    exited,
    get,
    clusterStatus: () => get<ClusterStatus>('/cluster_status'),
    async readyWorkerIds() {
      const body = await get<{ workers: { worker_id: string; status: string }[] }>('/workers');
      return body.workers
        .filter((w) => w.status === 'READY')
        .map((w) => w.worker_id)
        .sort();
    },
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (exit) return exit;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/**
 * Stop every scheduler this harness started that still runs (afterAll): SIGTERM so it
 * ends its local jobs, SIGKILL after 10 s, then SIGKILL whatever of its process tree is
 * left (workers and engines of a scheduler that could not stop).
 */
export async function killStartedSchedulers(): Promise<void> {
  const waits = [...started].map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const tree = descendants(child.pid);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    for (const pid of tree.filter(processAlive)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  });
  await Promise.all(waits);
  // A scheduler that leaves its jobs running (SLURM) leaves its es-proxy serving, and one
  // re-adopted from a scheduler stopped before is no descendant of the last: end them all.
  for (const logDir of logDirs) {
    const pid = dataPlanePid(logDir);
    if (pid === undefined || !cmdline(pid).includes('--state-file')) continue;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
  }
  logDirs.clear();
}

/** The pid of the es-proxy primary serving from `logDir` (its `data-plane.json`). */
function dataPlanePid(logDir: string): number | undefined {
  try {
    const { pid } = JSON.parse(readFileSync(join(logDir, 'data-plane.json'), 'utf8')) as {
      pid?: unknown;
    };
    return typeof pid === 'number' ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Every descendant of `pid` (children, grandchildren ...), from one `ps`. */
export function descendants(pid: number): number[] {
  const ps = execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' });
  const children = new Map<number, number[]>();
  for (const line of ps.split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number);
    if (child === undefined || parent === undefined || Number.isNaN(child)) continue;
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const next = queue.shift() as number;
    for (const c of children.get(next) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** A process and its command line. */
export interface ProcessInfo {
  pid: number;
  args: string;
}

function environ(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** The value of `name` in the environment of process `pid` (undefined when unset or gone). */
export function environValue(pid: number, name: string): string | undefined {
  const entry = environ(pid).find((e) => e.startsWith(`${name}=`));
  return entry?.slice(name.length + 1);
}

/** Live processes whose environment holds `name=value` (e.g. SLURM_JOB_ID=42). */
export function processesWithEnv(name: string, value: string): ProcessInfo[] {
  const wanted = `${name}=${value}`;
  const out: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || !environ(pid).includes(wanted) || !processAlive(pid)) continue;
    out.push({ pid, args: cmdline(pid) });
  }
  return out;
}

/** The es-worker processes (not srun, not engines) running inside SLURM job `jobId`. */
export function workerProcessesOfJob(jobId: string): ProcessInfo[] {
  return processesWithEnv('SLURM_JOB_ID', jobId).filter(
    (p) => p.args.includes('apps/worker/dist/cli.mjs') && !p.args.startsWith('srun'),
  );
}

/** The mock engine processes whose command line mentions `needle` (e.g. an api key). */
export function engineProcesses(needle: string): ProcessInfo[] {
  const out: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = cmdline(Number(entry));
    if (args.includes('mock-engine') && args.includes(needle) && processAlive(Number(entry))) {
      out.push({ pid: Number(entry), args });
    }
  }
  return out;
}

/** A PATH directory whose `sbatch` logs each call to a file, then runs the real sbatch. */
export interface SbatchShim {
  /** Put first on PATH. */
  binDir: string;
  /** Timestamps (ms) of every sbatch call so far. */
  calls(): number[];
}

/** Create an sbatch PATH shim in `dir` wrapping the sbatch found on PATH now. */
export function createSbatchShim(dir: string): SbatchShim {
  const real = execFileSync('sh', ['-c', 'command -v sbatch'], { encoding: 'utf8' }).trim();
  const binDir = join(dir, 'shim-bin');
  mkdirSync(binDir, { recursive: true });
  const log = join(dir, 'sbatch-calls.log');
  writeFileSync(log, '');
  const shim = join(binDir, 'sbatch');
  writeFileSync(
    shim,
    ['#!/bin/sh', `echo "$(date +%s%3N)" >> '${log}'`, `exec '${real}' "$@"`, ''].join('\n'),
  );
  chmodSync(shim, 0o755);
  return { binDir, calls: () => timestamps(log) };
}

/** The millisecond timestamps a shim appended to `file`, one a line. */
function timestamps(file: string): number[] {
  return existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map(Number)
    : [];
}

/** A PATH `squeue` whose answers can be made late, as a busy or stuck controller's are. */
export interface SqueueShim {
  /** Every squeue call from now on sleeps `seconds` before it runs the real one (0: none). */
  delay(seconds: number): void;
  /** Timestamps (ms) of the calls that started a delay. */
  delayedCalls(): number[];
}

/**
 * Create a delaying `squeue` in `binDir` (an {@link SbatchShim}'s, first on the scheduler's
 * PATH) that wraps the squeue found on PATH now; its files live in `dir`.
 */
export function createSqueueShim(binDir: string, dir: string): SqueueShim {
  const real = execFileSync('sh', ['-c', 'command -v squeue'], { encoding: 'utf8' }).trim();
  const delayFile = join(dir, 'squeue-delay');
  const log = join(dir, 'squeue-delayed.log');
  writeFileSync(delayFile, '0');
  writeFileSync(log, '');
  const shim = join(binDir, 'squeue');
  writeFileSync(
    shim,
    [
      '#!/bin/sh',
      `d=$(cat '${delayFile}' 2>/dev/null)`,
      `if [ -n "$d" ] && [ "$d" != 0 ]; then echo "$(date +%s%3N)" >> '${log}'; sleep "$d"; fi`,
      `exec '${real}' "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(shim, 0o755);
  return {
    delay: (seconds) => writeFileSync(delayFile, String(seconds)),
    delayedCalls: () => timestamps(log),
  };
}

/** Poll `fn` every `intervalMs` until `predicate` holds; rejects with the last value after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T> | T,
  predicate: (value: T) => boolean,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await fn();
      if (predicate(last)) return last;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not reached within ${timeoutMs} ms; last value ${JSON.stringify(last)}${
          lastError ? `, last error ${String(lastError)}` : ''
        }`,
      );
    }
    await sleep(intervalMs);
  }
}
