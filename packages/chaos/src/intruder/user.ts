/**
 * The intruder: an unprivileged user created for a test or a chaos run, as another user of a
 * shared cluster is, and code run as it. It gets nothing of the run but what any user has
 * (`ps`, /proc, the file system, the network, free ports): no secret in its environment, no
 * file it must read. What it runs is {@link INTRUDER_PROGRAM}; what each task hands it and
 * brings back is typed here.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { INTRUDER_PROGRAM } from './program.js';

/** One HTTP request the intruder sends. */
export interface HttpAttempt {
  host: string;
  port: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  timeoutMs: number;
  /** How much of the answer's body to bring back (default 2048 characters). */
  maxBodyBytes?: number;
}

/**
 * The status, the headers and the start (`maxBodyBytes`, 2 KiB by default) of the body, or the error's code
 * (`ECONNREFUSED`, `TIMEOUT`).
 */
export type HttpOutcome =
  | { status: number; headers: Record<string, string | string[] | undefined>; body: string }
  | { error: string };

/** One request a squatter received. */
export interface SquattedRequest {
  /** ms since the epoch. */
  at: number;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The body's first `maxBodyBytes`, as UTF-8. */
  body: string;
}

/** What a squatter did: whether it got the port, when, and what it was sent. */
export type SquatOutcome =
  | { bound: true; boundAt: number; releasedAt: number; requests: SquattedRequest[] }
  | { bound: false; error: string; requests: SquattedRequest[] };

/** A directory the intruder walks. */
export interface WalkRoot {
  dir: string;
  /** Names at the top of `dir` to leave out (what was there before the run). */
  skip?: string[];
  /** Only files modified at or after this time (ms since the epoch). */
  since?: number;
}

/** A file the intruder could read: its mode and the start of its content (base64). */
export interface ReadableFile {
  path: string;
  mode: number;
  content: string;
}

/** Each task of the intruder's program: what it is given and what it brings back. */
export interface IntruderTasks {
  requests: {
    input: { requests: HttpAttempt[]; concurrency: number };
    output: HttpOutcome[];
  };
  connectUnix: {
    input: { paths: string[]; timeoutMs: number };
    output: { path: string; outcome: string }[];
  };
  processes: {
    input: Record<string, never>;
    output: { ps: string; cmdlines: Record<string, string>; environs: Record<string, string> };
  };
  files: {
    input: { roots: WalkRoot[]; prune: string[]; maxBytes: number };
    output: { files: ReadableFile[] };
  };
  /**
   * Bind `host:port` as soon as it is free (every 20 ms, for up to `bindWithinMs`), hold it
   * `holdMs`, answer every request `status` with an OpenAI-shaped error, record them.
   */
  squat: {
    input: {
      host: string;
      port: number;
      bindWithinMs: number;
      holdMs: number;
      status: number;
      maxBodyBytes: number;
      /** Release the port 500 ms after this many requests, before `holdMs` is up. */
      endAfterRequests?: number;
    };
    output: SquatOutcome;
  };
}

/** An unprivileged user and the means to run tasks as it. */
export interface Intruder {
  /** The user's name; undefined when there is no `useradd` and a bare uid stands in. */
  user: string | undefined;
  uid: number;
  gid: number;
  /** Run one task of {@link INTRUDER_PROGRAM} as the user (its input goes on stdin, not argv). */
  run<K extends keyof IntruderTasks>(
    task: K,
    input: IntruderTasks[K]['input'],
    timeoutMs?: number,
  ): Promise<IntruderTasks[K]['output']>;
  /** `userdel` the user (nothing to do for a bare uid). */
  remove(): void;
}

/** Only root can create a user and switch to it. */
export function runningAsRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The ids of `/etc/passwd` (users) or `/etc/group` (groups). */
function idsIn(file: string): Set<number> {
  return new Set(
    readFileSync(file, 'utf8')
      .split('\n')
      .map((line) => Number(line.split(':')[2]))
      .filter((id) => Number.isInteger(id)),
  );
}

/** A uid and a gid no entry of this machine has (no `useradd`: spawn needs no passwd entry). */
function unusedIds(): { uid: number; gid: number } {
  const users = idsIn('/etc/passwd');
  const groups = idsIn('/etc/group');
  for (let id = 40_000 + Math.floor(Math.random() * 10_000); id < 60_000; id++) {
    if (!users.has(id) && !groups.has(id)) return { uid: id, gid: id };
  }
  throw new Error('no free uid/gid between 40000 and 60000 for the intruder');
}

/**
 * Create the intruder: a system user `es-intruder-<random>` with no home and no login shell
 * (`useradd`), or, where there is no `useradd`, a uid and gid no user of this machine has.
 * Root only (see {@link runningAsRoot}).
 * @example
 * const intruder = createIntruder();
 * const { ps } = await intruder.run('processes', {});
 * intruder.remove();
 */
export function createIntruder(): Intruder {
  const name = `es-intruder-${randomBytes(4).toString('hex')}`;
  const added = spawnSync(
    'useradd',
    ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name],
    { encoding: 'utf8' },
  );
  let user: string | undefined;
  let ids: { uid: number; gid: number };
  if ((added.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    ids = unusedIds();
  } else if (added.status === 0) {
    user = name;
    const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }));
    ids = { uid: id('-u'), gid: id('-g') };
  } else {
    throw new Error(`useradd ${name} failed: ${added.stderr || String(added.error)}`);
  }

  return {
    user,
    ...ids,
    run: (task, input, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', INTRUDER_PROGRAM], {
          ...ids,
          cwd: '/',
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8');
        child.stderr.setEncoding('utf8');
        child.stdout.on('data', (d: string) => (stdout += d));
        child.stderr.on('data', (d: string) => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          if (code !== 0) {
            reject(
              new Error(
                `intruder task ${task} ended with ${code ?? signal}${
                  signal === 'SIGKILL' ? ` (over ${timeoutMs} ms)` : ''
                }: ${stderr}`,
              ),
            );
            return;
          }
          try {
            resolve(JSON.parse(stdout) as IntruderTasks[typeof task]['output']);
          } catch {
            reject(new Error(`intruder task ${task}: unreadable answer ${stdout.slice(0, 200)}`));
          }
        });
        child.stdin.end(JSON.stringify({ task, input }));
      }),
    remove() {
      if (user !== undefined) execFileSync('userdel', [user], { stdio: 'pipe' });
    },
  };
}
