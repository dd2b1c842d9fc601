/**
 * The scheduler's data plane: one detached `es-proxy --processes N` supervisor serving the
 * client port, started in a session of its own so that it outlives the scheduler (a crash,
 * a SIGKILL, a restart), re-adopted by the next scheduler from its state file, and ended
 * only when the scheduler ends its jobs too.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { readDataPlaneState, type DataPlaneState } from '@es/protocol';
import { ConfigError } from './settings.js';

/** `<logDir>/control-url`: the scheduler's control listener, which es-proxy follows. */
export function controlUrlFilePath(logDir: string): string {
  return join(logDir, 'control-url');
}

/** `<logDir>/data-plane.json`: the state file es-proxy's primary writes once it listens. */
export function dataPlaneStateFilePath(logDir: string): string {
  return join(logDir, 'data-plane.json');
}

/** `<logDir>/es-proxy.log`: es-proxy's stdout and stderr. */
export function dataPlaneLogPath(logDir: string): string {
  return join(logDir, 'es-proxy.log');
}

/** A data plane serving the client port, started or re-adopted. */
export interface DataPlane {
  /** The client port it serves. */
  port: number;
  /** Its primary's pid (the leader of its process group). */
  pid: number;
  processes: number;
  /** True when a previous scheduler started it and this one found it serving. */
  adopted: boolean;
  /** SIGTERM the primary, SIGKILL its whole group after `graceMs` (default 20 s: es-proxy lets its requests finish for 15). */
  stop(graceMs?: number): Promise<void>;
}

/** Options of {@link startOrAdoptDataPlane}. */
export interface DataPlaneOptions {
  host: string;
  /** The client port (0: any free port, and any port of an es-proxy to re-adopt). */
  port: number;
  processes: number;
  logDir: string;
  secretFile: string;
  logger: Logger;
  /** argv prefix of es-proxy (default {@link defaultProxyCommand}). */
  command?: string[];
  /** How long to wait for the state file of a new es-proxy (default 15 s). */
  timeoutMs?: number;
}

/** Where a checkout keeps the es-proxy binary when its package.json does not say. */
const PROXY_CLI_PATH = 'apps/proxy/dist/main.mjs';

/** This Node and the es-proxy binary of the checkout this package runs from. */
export function defaultProxyCommand(): string[] {
  // src/ and dist/ are both one level below packages/scheduler: three levels to the root.
  const app = fileURLToPath(new URL('../../../apps/proxy/', import.meta.url));
  let entry = join(app, PROXY_CLI_PATH.slice('apps/proxy/'.length));
  try {
    const manifest = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as {
      bin?: string | Record<string, string>;
    };
    const bin = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin?.['es-proxy'];
    if (bin !== undefined) entry = resolve(app, bin);
  } catch {
    // No apps/proxy in this checkout: the error comes when the file is not there either.
  }
  return [process.execPath, entry];
}

/**
 * Whether signal 0 reaches `target` (a pid, or a group as -pgid). A zombie counts as alive
 * but does not last: our own child is reaped by Node, an adopted es-proxy (whose scheduler
 * is gone) by init; and its empty cmdline is never taken for an es-proxy.
 */
export function alive(target: number): boolean {
  try {
    process.kill(target, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether `pid` is an es-proxy writing `stateFile` (not a pid reused by another program). */
function isOurEsProxy(pid: number, stateFile: string): boolean {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return false;
  }
  const isProxy = argv.some(
    (arg) => basename(arg) === 'es-proxy' || arg.endsWith(PROXY_CLI_PATH.slice('apps'.length)),
  );
  const flag = argv.indexOf('--state-file');
  return isProxy && flag >= 0 && resolve(argv[flag + 1] ?? '') === resolve(stateFile);
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Gone already.
  }
}

/** Polls until `done()` or `ms` have passed; true when done. */
async function waitUntil(done: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

/**
 * End the es-proxy whose primary is `pid`: SIGTERM to the primary (it stops accepting and
 * lets its workers finish their requests), then SIGKILL to its group after `graceMs`.
 */
async function endDataPlane(pid: number, graceMs: number): Promise<void> {
  signal(pid, 'SIGTERM');
  await waitUntil(() => !alive(pid), graceMs);
  // Workers the primary left behind go too (a group: es-proxy was started detached).
  if (alive(-pid)) signal(-pid, 'SIGKILL');
  await waitUntil(() => !alive(pid), 2_000);
}

function handle(state: DataPlaneState, adopted: boolean): DataPlane {
  let stopped: Promise<void> | undefined;
  return {
    port: state.port,
    pid: state.pid,
    processes: state.processes,
    adopted,
    stop: (graceMs = 20_000) => (stopped ??= endDataPlane(state.pid, graceMs)),
  };
}

const plural = (n: number) => `${n} process${n === 1 ? '' : 'es'}`;

/** The last `lines` lines of `file` (its last 8 KiB at most). */
function tail(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, 'utf8').slice(-8192);
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Re-adopt the es-proxy a previous scheduler left serving `host:port` from this log
 * directory, or start a new one and wait until it listens.
 * @throws {ConfigError} when the client port is in use (es-proxy exits 3), es-proxy ends
 *   otherwise, or it does not listen within the timeout; each names its log.
 * @example
 * const dataPlane = await startOrAdoptDataPlane({ host, port: 8780, processes: 2, logDir,
 *   secretFile, logger });
 * // clients use http://host:${dataPlane.port}/v1; on exit: await dataPlane.stop();
 */
export async function startOrAdoptDataPlane(options: DataPlaneOptions): Promise<DataPlane> {
  const log = options.logger;
  const stateFile = dataPlaneStateFilePath(options.logDir);
  const logFile = dataPlaneLogPath(options.logDir);
  const previous = existsSync(stateFile) ? readDataPlaneState(stateFile) : undefined;
  if (previous !== undefined && alive(previous.pid) && isOurEsProxy(previous.pid, stateFile)) {
    const samePlace =
      previous.host === options.host && (options.port === 0 || previous.port === options.port);
    if (samePlace) {
      log.info(
        { pid: previous.pid, port: previous.port, processes: previous.processes },
        `re-adopted es-proxy (pid ${previous.pid}, ${plural(previous.processes)}) serving ${previous.host}:${previous.port}; it follows ${controlUrlFilePath(options.logDir)}`,
      );
      if (previous.processes !== options.processes) {
        log.warn(
          `es-proxy runs ${previous.processes} processes, not --proxy-processes ${options.processes}: the number changes when it is restarted (stop the scheduler with its jobs, or SIGTERM pid ${previous.pid})`,
        );
      }
      return handle(previous, true);
    }
    // It serves another address than asked for: no scheduler would follow it any more.
    log.warn(
      `es-proxy pid ${previous.pid} serves ${previous.host}:${previous.port}, not ${options.host}:${options.port}: ending it and starting another`,
    );
    await endDataPlane(previous.pid, 15_000);
  }
  rmSync(stateFile, { force: true });

  const [command, ...prefix] = options.command ?? defaultProxyCommand();
  if (command === undefined) throw new ConfigError('no es-proxy command to run', 'proxyProcesses');
  const entry = prefix[0];
  if (options.command === undefined && entry !== undefined && !existsSync(entry)) {
    throw new ConfigError(
      `es-proxy is not built (${entry} is missing): run pnpm build, or pass --proxy-processes 0 to serve --port in the scheduler process`,
      'proxyProcesses',
    );
  }
  const args = [
    ...prefix,
    ...['--secret-file', options.secretFile],
    ...['--scheduler-url-file', controlUrlFilePath(options.logDir)],
    ...['--host', options.host, '--port', String(options.port)],
    ...['--processes', String(options.processes), '--state-file', stateFile],
  ];
  const fd = openSync(logFile, 'a', 0o600);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let child;
  try {
    // Its own session and process group: a SIGKILL of the scheduler (or of its group, as a
    // terminal's Ctrl-C sends SIGINT to) leaves the client port served.
    child = spawn(command, args, { detached: true, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  child.once('exit', (code, sig) => (exit = { code, signal: sig }));
  child.once('error', () => (exit ??= { code: null, signal: null }));
  child.unref();
  const pid = child.pid;
  const where = `${options.host}:${options.port}`;
  const ready = await waitUntil(
    () => exit !== undefined || readDataPlaneState(stateFile)?.pid === pid,
    options.timeoutMs ?? 15_000,
  );
  const state = readDataPlaneState(stateFile);
  if (pid !== undefined && exit === undefined && ready && state?.pid === pid) {
    log.info(
      { pid, port: state.port, processes: state.processes, log: logFile },
      `started es-proxy (pid ${pid}, ${plural(state.processes)}) on ${options.host}:${state.port}`,
    );
    return handle(state, false);
  }
  if (pid !== undefined && exit === undefined) await endDataPlane(pid, 2_000);
  const lastLines = tail(logFile);
  const said = lastLines === '' ? '' : `\nlast lines of ${logFile}:\n${lastLines}`;
  if (exit?.code === 3) {
    throw new ConfigError(
      `port ${options.port} on ${options.host} is in use (es-proxy could not listen on ${where}): is another scheduler or es-proxy running? Stop it or pass --port${said}`,
      'port',
    );
  }
  throw new ConfigError(
    exit === undefined
      ? `es-proxy did not listen on ${where} within ${(options.timeoutMs ?? 15_000) / 1000} s: see ${logFile}, or pass --proxy-processes 0${said}`
      : `es-proxy exited (${exit.code ?? exit.signal ?? 'could not start'}) before listening on ${where}: see ${logFile}, or pass --proxy-processes 0${said}`,
    'proxyProcesses',
  );
}
