/**
 * The attacks of another user of a shared cluster, as checks that return findings (one
 * string per violation, empty when none): what the job processes listen on (read as root
 * from /proc), requests and connections to it, `ps` and /proc, and the files that user can
 * read, all done by the {@link Intruder}. The real scenario and the tests that plant one
 * violation of each kind run the same functions.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import type { HttpAttempt, HttpOutcome, Intruder, WalkRoot } from './user.js';

/** A key to look for (or a pattern every key of a kind matches), and the name a finding gives it. */
export interface Secret {
  name: string;
  value: string | RegExp;
}

/**
 * Any engine key, however it is derived (the scheme before per-job keys was one
 * `es-engine-…` for every job): a key of a job the test did not enumerate is found too.
 */
export const ANY_ENGINE_KEY: Secret = {
  name: 'an engine key (es-engine-…)',
  value: /es-engine-[0-9a-f]{16,}/,
};

/** A process listening on TCP. */
export interface TcpListener {
  kind: 'tcp';
  pid: number;
  /** Its command line, spaces between the words. */
  args: string;
  /** The address it is bound to (`0.0.0.0`, `127.0.0.1`, `::`, `::1` ...). */
  host: string;
  port: number;
}

/** A process listening on a Unix socket. */
export interface UnixListener {
  kind: 'unix';
  pid: number;
  args: string;
  /** The socket's path; `@name` for an abstract socket. */
  path: string;
}

export type Listener = TcpListener | UnixListener;

/** An address the intruder sends requests to. */
export interface TcpTarget {
  host: string;
  port: number;
  /** Whose address it is, for the findings. */
  label: string;
  /** Credentials to try at this target only (another job's engine key). */
  credentials?: Credential[];
}

/** How a request authenticates (or pretends to): its extra headers. */
export interface Credential {
  name: string;
  headers: Record<string, string>;
}

/** Every path an engine (vLLM, SGLang, the mock) has, and one it has not. */
export const ENGINE_PATHS = [
  '/invocations',
  '/tokenize',
  '/detokenize',
  '/pooling',
  '/score',
  '/rerank',
  '/metrics',
  '/health',
  '/v1/models',
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/no-such-path',
] as const;

/** A body every inference path of an engine would act on. */
const REQUEST_BODY = JSON.stringify({
  model: 'mock-model',
  messages: [{ role: 'user', content: 'hello' }],
  prompt: 'hello',
  input: 'hello',
  text: 'hello',
  tokens: [1, 2, 3],
  query: 'hello',
  documents: ['hello'],
  text_1: 'hello',
  text_2: 'world',
  max_tokens: 4,
});

/** A refusal: 401 or 403, or the connection refused or cut. */
const REFUSED_STATUS = new Set([401, 403]);
const REFUSED_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE']);
/** What a Unix socket's connect may end with: the intruder may not reach it. */
const UNIX_REFUSALS = new Set(['EACCES', 'ENOENT', 'ECONNREFUSED']);

/** The es-worker process (its forwarders are the only TCP listeners a job may have). */
export function isWorkerProcess(args: string): boolean {
  return /apps\/worker\/dist\/cli\.mjs/.test(args);
}

/** The names of the secrets found in `text`. */
export function secretsIn(text: string, secrets: readonly Secret[]): string[] {
  return secrets
    .filter((s) =>
      typeof s.value === 'string' ? text.includes(s.value) : new RegExp(s.value.source).test(text),
    )
    .map((s) => s.name);
}

/** `text` with each secret replaced by its name, cut to `max` characters. */
export function redact(text: string, secrets: readonly Secret[], max = 240): string {
  let out = text;
  for (const s of secrets) {
    out =
      typeof s.value === 'string'
        ? out.split(s.value).join(`<${s.name}>`)
        : out.replace(new RegExp(s.value.source, 'g'), `<${s.name}>`);
  }
  out = out.replace(/\s+/g, ' ').trim();
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** A variable of a process's environment (root reads every process's). */
export function environOf(pid: number, name: string): string | undefined {
  try {
    const entry = readFileSync(`/proc/${pid}/environ`, 'latin1')
      .split('\0')
      .find((e) => e.startsWith(`${name}=`));
    return entry?.slice(name.length + 1);
  } catch {
    return undefined;
  }
}

/** The socket inodes among a process's open file descriptors. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match?.[1] !== undefined) inodes.add(match[1]);
    } catch {
      // Closed meanwhile.
    }
  }
  return inodes;
}

/** `0100007F` → `127.0.0.1`; 32 hex digits (four host-order words) → an IPv6 address. */
function decodeAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => (w.match(/../g) ?? []).reverse().map((b) => parseInt(b, 16)));
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  }
  // The URL parser writes an IPv6 address in its shortest form.
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

/** Listening TCP sockets by inode, from /proc/net/tcp and tcp6 (state 0A). */
function tcpListeningSockets(): Map<string, { host: string; port: number }> {
  const out = new Map<string, { host: string; port: number }>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [local, state, inode] = [fields[1], fields[3], fields[9]];
      if (local === undefined || inode === undefined || state !== '0A') continue;
      const [address, port] = local.split(':');
      out.set(inode, { host: decodeAddress(address ?? ''), port: parseInt(port ?? '', 16) });
    }
  }
  return out;
}

/** Listening Unix sockets with a name, by inode, from /proc/net/unix (flag __SO_ACCEPTCON). */
function unixListeningSockets(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const [flags, inode, path] = [fields[3], fields[6], fields[7]];
    if (flags === undefined || inode === undefined || path === undefined) continue;
    if ((parseInt(flags, 16) & 0x10000) !== 0) out.set(inode, path);
  }
  return out;
}

/** Every address `pids` listen on (read as root: their fds, /proc/net/{tcp,tcp6,unix}). */
export function listenersOf(pids: readonly number[]): Listener[] {
  const tcp = tcpListeningSockets();
  const unix = unixListeningSockets();
  const out: Listener[] = [];
  for (const pid of pids) {
    const args = cmdline(pid);
    for (const inode of socketInodes(pid)) {
      const address = tcp.get(inode);
      if (address !== undefined) out.push({ kind: 'tcp', pid, args, ...address });
      const path = unix.get(inode);
      if (path !== undefined) out.push({ kind: 'unix', pid, args, path });
    }
  }
  return out;
}

/** `pid 42 (node …/cli.mjs --model …)`. */
export function processLabel(pid: number, args: string): string {
  return `pid ${pid} (${args.length > 100 ? `${args.slice(0, 100)}…` : args})`;
}

/**
 * Findings for TCP listeners of processes other than an es-worker: an engine on a Unix
 * socket has none; only the worker's authenticating forwarder listens on TCP.
 */
export function tcpOutsideWorkers(listeners: readonly Listener[]): string[] {
  return listeners
    .filter((l): l is TcpListener => l.kind === 'tcp' && !isWorkerProcess(l.args))
    .map(
      (l) =>
        `${processLabel(l.pid, l.args)} listens on TCP ${l.host}:${l.port}: only an es-worker's authenticating forwarder may listen on TCP`,
    );
}

/** The addresses to send requests to: a wildcard bind is reached on loopback. */
export function targetsOf(listeners: readonly Listener[]): TcpTarget[] {
  const hosts = (host: string) =>
    host === '0.0.0.0' ? ['127.0.0.1'] : host === '::' ? ['::1', '127.0.0.1'] : [host];
  return listeners
    .filter((l): l is TcpListener => l.kind === 'tcp')
    .flatMap((l) =>
      hosts(l.host).map((host) => ({ host, port: l.port, label: processLabel(l.pid, l.args) })),
    );
}

/** `http://host:port` (an IPv6 host in brackets). */
export function targetUrl(t: { host: string; port: number }): string {
  return `http://${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/**
 * Send every path of {@link ENGINE_PATHS} with GET and POST, with each credential, to each
 * target, as the intruder. A finding for each path and method that was answered with
 * anything but a refusal (401, 403, connection refused or reset), and for any answer whose
 * body holds a secret.
 */
export async function probeTcp(
  intruder: Intruder,
  targets: readonly TcpTarget[],
  credentials: readonly Credential[],
  secrets: readonly Secret[],
  timeoutMs = 5_000,
): Promise<string[]> {
  const plan: { target: TcpTarget; credential: Credential; attempt: HttpAttempt }[] = [];
  for (const target of targets) {
    for (const path of ENGINE_PATHS) {
      for (const method of ['GET', 'POST']) {
        for (const credential of [...credentials, ...(target.credentials ?? [])]) {
          plan.push({
            target,
            credential,
            attempt: {
              host: target.host,
              port: target.port,
              method,
              path,
              headers: {
                'content-type': 'application/json',
                connection: 'close',
                ...credential.headers,
              },
              ...(method === 'POST' ? { body: REQUEST_BODY } : {}),
              timeoutMs,
            },
          });
        }
      }
    }
  }
  const outcomes = await intruder.run(
    'requests',
    { requests: plan.map((p) => p.attempt), concurrency: 16 },
    plan.length * timeoutMs,
  );

  // Per address, path and method: each answer that is not a refusal, and who got it.
  const answered = new Map<string, Map<string, string[]>>();
  const findings: string[] = [];
  plan.forEach(({ target, credential, attempt }, i) => {
    const outcome = outcomes[i] as HttpOutcome;
    const where = `${target.label}: ${attempt.method} ${targetUrl(target)}${attempt.path}`;
    if ('status' in outcome) {
      const leaked = secretsIn(outcome.body, secrets);
      if (leaked.length > 0) {
        findings.push(
          `${where} [${credential.name}]: the ${outcome.status} answer holds ${leaked.join(', ')}`,
        );
      }
      if (REFUSED_STATUS.has(outcome.status)) return;
    } else if (REFUSED_ERRORS.has(outcome.error)) {
      return;
    }
    const what =
      'status' in outcome
        ? `${outcome.status} ${redact(outcome.body, secrets, 60)}`.trim()
        : `no refusal (${outcome.error})`;
    const answers = answered.get(where) ?? new Map<string, string[]>();
    answers.set(what, [...(answers.get(what) ?? []), credential.name]);
    answered.set(where, answers);
  });
  for (const [where, answers] of answered) {
    const parts = [...answers].map(([what, who]) => `${what} to ${who.join(', ')}`);
    findings.push(`${where} answered ${parts.join('; ')}`);
  }
  return findings;
}

/** The intruder connects to each listening Unix socket: a finding for each it reached. */
export async function probeUnix(
  intruder: Intruder,
  listeners: readonly Listener[],
): Promise<string[]> {
  const unix = listeners.filter((l): l is UnixListener => l.kind === 'unix');
  const results = await intruder.run('connectUnix', {
    paths: unix.map((l) => (l.path.startsWith('@') ? `\0${l.path.slice(1)}` : l.path)),
    timeoutMs: 3_000,
  });
  return results.flatMap((r, i) => {
    if (UNIX_REFUSALS.has(r.outcome)) return [];
    const l = unix[i] as UnixListener;
    const what = r.outcome === 'connected' ? 'connected' : `got ${r.outcome}`;
    return [
      `${processLabel(l.pid, l.args)} listens on Unix socket ${l.path}: the intruder ${what}`,
    ];
  });
}

/**
 * What every user sees of the processes: `ps -ww -eo pid,args` and each /proc/<pid>/cmdline
 * and environ the intruder may read. A finding for each line or file that holds a secret.
 */
export async function scanProcesses(
  intruder: Intruder,
  secrets: readonly Secret[],
): Promise<string[]> {
  const seen = await intruder.run('processes', {});
  const findings: string[] = [];
  for (const line of seen.ps.split('\n')) {
    const found = secretsIn(line, secrets);
    if (found.length > 0) findings.push(`ps shows ${found.join(', ')}: ${redact(line, secrets)}`);
  }
  for (const [kind, files] of [
    ['cmdline', seen.cmdlines],
    ['environ', seen.environs],
  ] as const) {
    for (const [pid, text] of Object.entries(files)) {
      const found = secretsIn(text, secrets);
      if (found.length === 0) continue;
      findings.push(
        `/proc/${pid}/${kind} (readable by the intruder) holds ${found.join(', ')}: ${redact(
          text.split('\0').join(' '),
          secrets,
        )}`,
      );
    }
  }
  return findings;
}

/**
 * Every file the intruder can read under `roots` (see {@link WalkRoot}; `node_modules` and
 * `.git` are not entered): a finding for each whose path or first 4 MiB holds a secret.
 */
export async function scanFiles(
  intruder: Intruder,
  roots: readonly WalkRoot[],
  secrets: readonly Secret[],
): Promise<string[]> {
  const { files } = await intruder.run(
    'files',
    { roots: [...roots], prune: ['node_modules', '.git'], maxBytes: 4 * 1024 * 1024 },
    60_000,
  );
  return files.flatMap((file) => {
    const found = secretsIn(
      `${file.path}\n${Buffer.from(file.content, 'base64').toString('latin1')}`,
      secrets,
    );
    if (found.length === 0) return [];
    return [
      `${file.path} (mode ${file.mode.toString(8).padStart(4, '0')}, readable by the intruder) holds ${found.join(', ')}`,
    ];
  });
}
