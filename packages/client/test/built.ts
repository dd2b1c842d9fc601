/**
 * The built `es` binary and the built `es-scheduler` as child processes, the way an operator
 * runs them (local backend, mock engine): shared by the CLI's end-to-end tests.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

// The shared test helpers (@es/client does not depend on @es/testkit; its tests run its code).
export { until } from '../../testkit/src/index.js';

const ES = fileURLToPath(new URL('../dist/cli.mjs', import.meta.url));
const SCHEDULER = fileURLToPath(new URL('../../../apps/scheduler/dist/cli.mjs', import.meta.url));

/** What one `es` run printed and how it exited. */
export interface EsRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Throws unless both binaries are built. */
export function assertBuilt(): void {
  for (const file of [ES, SCHEDULER]) {
    if (!existsSync(file)) throw new Error(`${file} missing: run pnpm build first`);
  }
}

/** A port nothing listens on (for now). */
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

/** `es <args>` in `cwd` with exactly `env` (PATH added). */
export function runEs(cwd: string, env: Record<string, string>, args: string[]): Promise<EsRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [ES, ...args],
      { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (error, stdout, stderr) =>
        resolve({
          code: error ? Number((error as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr,
        }),
    );
  });
}

function withoutEsVariables(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^(ES_|ELASTIC_SERVING_)/.test(name)),
  );
}

/** A built `es-scheduler` child process. */
export interface BuiltScheduler {
  url: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  /** SIGTERM, then wait for the exit (nothing when it already exited). */
  stop(): Promise<void>;
}

/**
 * Start the built `es-scheduler` in `cwd` (its `logs/` there): local backend, mock engine,
 * `mock-model` on 2 nodes at TP 4 (2 instances a node), on a free port of 127.0.0.1.
 */
export async function startBuiltScheduler(
  cwd: string,
  schedulerId: string,
): Promise<BuiltScheduler> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      SCHEDULER,
      ...['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'],
      ...['--max-nodes', '2', '--tensor-parallel-size', '4', '--port', String(port)],
      ...['--scheduler-id', schedulerId, '--node-acquire-interval', '1'],
      ...['--health-check-interval', '1', '--heartbeat-timeout', '5'],
    ],
    // Nothing of the environment running the tests that would point it elsewhere (ES_*).
    { cwd, stdio: 'ignore', env: withoutEsVariables() },
  );
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
