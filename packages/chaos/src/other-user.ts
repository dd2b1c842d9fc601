/**
 * "Another user of the cluster": every attack of the two shared-cluster issues, run as an
 * unprivileged user (the {@link Intruder}) against the real scheduler and its SLURM jobs on
 * this machine, each turned into a check that counts what it found.
 *
 * - Issue 14: requests without the engine key (none, wrong, the worker/admin tokens, another
 *   job's engine key, a forged `Host`) to every engine path at every address a job process
 *   listens on; connects to their Unix sockets; `ps` and /proc cmdline/environ; every file
 *   it can read in the log directory and in new temp entries.
 * - Issue 15: the public routes show no engine address, node name or job id; a squatter on
 *   the scheduler's port during a restart records what workers send, answers 409 to all of
 *   it, and learns nothing replayable (no key in it, its replay refused by the restarted
 *   scheduler) and makes no worker exit (their logs say they ignored its unsigned answers);
 *   an admin request the `es` CLI sent to a squatter is refused when replayed.
 */
import { createHmac } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { deriveEngineKey, deriveKeys } from '@es/protocol';
import { repoRoot } from '@es/testkit';
import { inWindow, summarize } from './checker.js';
import { isAlive, pidsOfJob } from './faults.js';
import {
  ANY_ENGINE_KEY,
  listenersOf,
  probeTcp,
  probeUnix,
  redact,
  scanFiles,
  scanProcesses,
  secretsIn,
  targetUrl,
  targetsOf,
  tcpOutsideWorkers,
  type Credential,
  type Listener,
  type Secret,
  type TcpTarget,
} from './intruder/checks.js';
import { ChaosError } from './errors.js';
import {
  createIntruder,
  runningAsRoot,
  type HttpAttempt,
  type HttpOutcome,
  type Intruder,
  type SquattedRequest,
} from './intruder/user.js';
import { OTHER_USER_FAULT, type FaultResult } from './report.js';
import { capacityCheck, waitForCapacity, type ChaosContext } from './scenarios.js';

/** Options of {@link otherUserScenario}. */
export interface OtherUserOptions {
  /** The scheduler's log directory (its `secret`, the jobs' `.out`); default: its log file's. */
  logDir?: string;
  /** The admin key (default: the scheduler's, `SchedulerProcess.adminKey()`). */
  adminKey?: string;
  /** How long the squatter holds the scheduler's port, ms (default 5000). */
  squatMs?: number;
  /** An intruder to reuse (default: one created for the scenario and removed after it). */
  intruder?: Intruder;
  /** The deployment (and model) the scheduler serves (default `mock-model`). */
  model?: string;
  /** Files in the temp directory modified before this (ms) are not the run's (default: its first event). */
  since?: number;
}

/** The parts of `GET /api/v1/admin/status` the scenario reads. */
export interface AdminStatus {
  deployments: {
    jobs: { jobId: string; nodes: string }[];
    workers: { id: string; jobId: string; node: string; baseUrl: string; state: string }[];
  }[];
}

/** What the public routes must not show: the engines' addresses, node names, job ids. */
export interface PrivateFacts {
  /** `host:port` of each engine front. */
  addresses: string[];
  ports: number[];
  nodes: string[];
  jobIds: string[];
}

/** The check names of {@link otherUserScenario}, in the order the report lists them. */
export const OTHER_USER_CHECKS = {
  tcp: 'job processes listening on TCP outside es-worker',
  engine: 'engine paths answered without the engine key',
  unix: 'Unix sockets the intruder connected to',
  processes: 'keys in ps or /proc',
  files: 'keys in files the intruder can read',
  publicRoutes: 'public routes showing an engine address, node name or job id',
  squatKeys: 'keys in what the squatter recorded',
  squatReplay: 'replayed worker requests accepted',
  squatMissed: 'squatter reached no worker',
  squatForged: 'registrations forged from what the squatter recorded accepted',
  workersExited: 'jobs whose worker exited or stopped serving after the squat',
  workersSilent: 'workers that did not log ignoring the unsigned answers',
  cliMissed: 'es CLI sent the squatter nothing',
  cliKeys: 'keys the es CLI sent to a squatter',
  cliReplay: 'replayed admin requests accepted',
} as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A line a worker logs when it ignores an answer that was not signed with the secret. */
export const IGNORED_UNSIGNED = /ignored an answer|not signed|wrongly signed|unsigned/i;

/** `GET /api/v1/admin/status` of the scheduler at `url`, with the admin key (5 s at most). */
export async function adminStatus(url: string, adminKey: string): Promise<AdminStatus> {
  const res = await fetch(`${url}/api/v1/admin/status`, {
    headers: { authorization: `Bearer ${adminKey}` },
    signal: AbortSignal.timeout(5_000),
  });
  if (!res.ok) throw new Error(`GET ${url}/api/v1/admin/status: ${res.status} ${await res.text()}`);
  return (await res.json()) as AdminStatus;
}

/**
 * The keys derived from the secret, by name (`workerKey`, `adminToken` ...), and the bearer
 * token workers sent in clear before the worker protocol was signed (`workerToken`): a run
 * of either version is attacked with, and searched for, what it derives.
 */
export function derivedKeysByName(secret: string): Record<string, string> {
  return {
    workerToken: createHmac('sha256', secret.trim()).update('elastic-serving:worker').digest('hex'),
    ...(deriveKeys(secret) as unknown as Record<string, string>),
  };
}

/**
 * What another user would try at an engine's address instead of its key: nothing, a wrong
 * key, each key derived from the secret (Bearer and Basic), `extra` keys, a forged `Host`.
 */
export function engineCredentials(
  secret: string,
  extra: Record<string, string> = {},
): Credential[] {
  const bearer = (name: string, key: string): Credential => ({
    name,
    headers: { authorization: `Bearer ${key}` },
  });
  return [
    { name: 'no Authorization', headers: {} },
    bearer('a wrong Bearer key', `es-engine-${'0'.repeat(48)}`),
    ...Object.entries(derivedKeysByName(secret)).flatMap(([name, key]) => [
      bearer(`the derived ${name}`, key),
      {
        name: `the derived ${name} as Basic`,
        headers: { authorization: `Basic ${Buffer.from(`es:${key}`).toString('base64')}` },
      },
    ]),
    ...Object.entries(extra).map(([name, key]) => bearer(name, key)),
    {
      name: 'a forged Host: localhost',
      headers: { host: 'localhost', 'x-forwarded-for': '127.0.0.1' },
    },
  ];
}

/** Every key of the run: the secret, what is derived from it, each job's engine key. */
export function secretsOfRun(
  secret: string,
  jobIds: Iterable<string>,
  extra: Secret[] = [],
): Secret[] {
  return [
    { name: 'the secret', value: secret.trim() },
    ...Object.entries(derivedKeysByName(secret)).map(([name, value]) => ({
      name: `the derived ${name}`,
      value,
    })),
    ...[...jobIds].map((id) => ({
      name: `the engine key of job ${id}`,
      value: deriveEngineKey(secret, id),
    })),
    ...extra,
  ];
}

/** An address {@link engineTargets} found, and the job it is of. */
export interface EngineTarget {
  target: TcpTarget;
  jobId: string;
}

/**
 * Where to try the engine paths: every TCP address a job process listens on (`listeners`,
 * its job named by `jobOf(pid)`), then each worker's advertised `baseUrl` that none of them
 * is; each address with the engine keys of the other jobs of `jobIds`, since one leaked key
 * must open one job only. Keyed by {@link targetUrl}.
 */
export function engineTargets(
  secret: string,
  jobIds: Iterable<string>,
  listeners: readonly Listener[],
  workers: readonly { id: string; jobId: string; baseUrl: string }[],
  jobOf: (pid: number) => string,
): Map<string, EngineTarget> {
  const jobs = [...jobIds];
  const otherJobsKeys = (jobId: string): Credential[] =>
    jobs
      .filter((id) => id !== jobId)
      .map((id) => ({
        name: `the engine key of job ${id}`,
        headers: { authorization: `Bearer ${deriveEngineKey(secret, id)}` },
      }));
  const targets = new Map<string, EngineTarget>();
  for (const l of listeners) {
    const jobId = jobOf(l.pid);
    for (const t of targetsOf([l])) {
      targets.set(targetUrl(t), { target: { ...t, credentials: otherJobsKeys(jobId) }, jobId });
    }
  }
  for (const w of workers) {
    const u = new URL(w.baseUrl);
    const t = { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) };
    if (!targets.has(targetUrl(t))) {
      targets.set(targetUrl(t), {
        target: { ...t, label: `worker ${w.id} (advertised)`, credentials: otherJobsKeys(w.jobId) },
        jobId: w.jobId,
      });
    }
  }
  return targets;
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The job's own processes (es-worker, engines): SLURM's `srun` and `slurmstepd` are the cluster's. */
function jobProcesses(jobIds: Iterable<string>): number[] {
  return [...jobIds].flatMap((id) =>
    pidsOfJob(id, '').filter((pid) => !['srun', 'slurmstepd'].includes(comm(pid))),
  );
}

/** The es-worker processes of a job. */
function workerPids(jobId: string): number[] {
  return pidsOfJob(jobId, 'worker/dist/cli.mjs').filter((pid) => comm(pid) !== 'srun');
}

/** `host:port` of a URL (an IPv6 host in brackets), and its port. */
function addressOf(url: string): { address: string; port: number } {
  const u = new URL(url);
  return { address: u.host, port: Number(u.port) };
}

/** The private facts of the scheduler's admin status. */
export function privateFacts(status: AdminStatus): PrivateFacts {
  const workers = status.deployments.flatMap((d) => d.workers);
  const jobs = status.deployments.flatMap((d) => d.jobs);
  const fronts = workers.map((w) => addressOf(w.baseUrl));
  return {
    addresses: [...new Set(fronts.map((f) => f.address))],
    ports: [...new Set(fronts.map((f) => f.port))],
    nodes: [...new Set([...workers.map((w) => w.node), ...jobs.map((j) => j.nodes)])].filter(
      (n) => n !== '',
    ),
    jobIds: [...new Set([...workers.map((w) => w.jobId), ...jobs.map((j) => j.jobId)])],
  };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** What of `facts` one value shows (`key` is the name it has in its object). */
function showsIn(value: string | number, key: string, facts: PrivateFacts): string[] {
  const found: string[] = [];
  if (typeof value === 'number') {
    if (/port/i.test(key) && facts.ports.includes(value)) found.push(`engine port ${value}`);
    if (/job|id/i.test(key) && facts.jobIds.includes(String(value))) {
      found.push(`job id ${value}`);
    }
    return found;
  }
  for (const a of facts.addresses) if (value.includes(a)) found.push(`engine address ${a}`);
  for (const n of facts.nodes) {
    if (new RegExp(`(^|[^A-Za-z0-9_-])${escape(n)}($|[^A-Za-z0-9_-])`).test(value)) {
      found.push(`node name ${n}`);
    }
  }
  for (const id of facts.jobIds) {
    if (
      value === id ||
      new RegExp(`^${escape(id)}\\.\\d+\\.\\d+$`).test(value) ||
      new RegExp(`job[ _-]?(id)?[ :=#]*${escape(id)}\\b|-${escape(id)}\\.(out|err)\\b`, 'i').test(
        value,
      )
    ) {
      found.push(`job id ${id}`);
    }
  }
  return found;
}

/** Every finding in a JSON value (or text): `<where> <json path>: <what>`. */
export function leaksIn(where: string, value: unknown, facts: PrivateFacts, path = ''): string[] {
  if (typeof value === 'string' || typeof value === 'number') {
    const key = path.split('.').at(-1) ?? '';
    return showsIn(value, key, facts).map(
      (what) =>
        `${where} shows ${what} at ${path || '(body)'}: ${JSON.stringify(value).slice(0, 120)}`,
    );
  }
  if (Array.isArray(value)) {
    return value.flatMap((v, i) => leaksIn(where, v, facts, `${path}[${i}]`));
  }
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value).flatMap(([k, v]) =>
      leaksIn(where, v, facts, path === '' ? k : `${path}.${k}`),
    );
  }
  return [];
}

/** The routes anyone may call, and a chat request (its answer's headers too). */
const PUBLIC_ROUTES = ['/', '/health', '/cluster_status', '/workers'];

/**
 * As the intruder, without a key: `GET` each public route and one chat completion; a finding
 * for each engine address, node name or job id a body or a response header shows.
 */
export async function probePublicRoutes(
  intruder: Intruder,
  url: string,
  facts: PrivateFacts,
  model: string,
): Promise<string[]> {
  const { hostname, port } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  const attempts: HttpAttempt[] = [
    ...PUBLIC_ROUTES.map((path) => ({
      host,
      port: Number(port),
      method: 'GET',
      path,
      headers: { connection: 'close' },
      timeoutMs: 10_000,
      maxBodyBytes: 4 * 1024 * 1024,
    })),
    {
      host,
      port: Number(port),
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { connection: 'close', 'content-type': 'application/json' },
      body: JSON.stringify({
        model,
        messages: [{ role: 'user', content: 'hello' }],
        max_tokens: 2,
      }),
      timeoutMs: 30_000,
    },
  ];
  const outcomes = await intruder.run('requests', { requests: attempts, concurrency: 1 }, 60_000);
  return outcomes.flatMap((outcome, i) => {
    const attempt = attempts[i] as HttpAttempt;
    const where = `${attempt.method} ${attempt.path} (no key)`;
    if (!('status' in outcome)) return [`${where}: no answer (${outcome.error})`];
    let body: unknown = outcome.body;
    try {
      body = JSON.parse(outcome.body);
    } catch {
      // Not JSON (an SSE stream, text): searched as text.
    }
    const headers = Object.fromEntries(
      Object.entries(outcome.headers).filter(
        ([name]) => !['date', 'content-length'].includes(name),
      ),
    );
    // A client's answer names the worker that served it (`x-elastic-selected-worker-id`,
    // which the load records): only its address and node are the admin's.
    return [
      ...leaksIn(where, body, facts),
      ...leaksIn(`${where} header`, headers, { ...facts, jobIds: [] }),
    ];
  });
}

/** The headers a request authenticates with (or signs with): dropped to see if a route is public. */
const CREDENTIAL_HEADER = /^(authorization|cookie)$|sign|nonce|timestamp|auth|^x-es-/i;
/** Headers of one connection, not of the request. */
const HOP_HEADER = /^(host|connection|content-length|transfer-encoding|keep-alive)$/i;

/** An authentication refusal. */
const refused = (outcome: HttpOutcome | undefined) =>
  outcome !== undefined &&
  'status' in outcome &&
  (outcome.status === 401 || outcome.status === 403);

/**
 * As the intruder, send each recorded request again to `url`, as recorded and without its
 * credentials: a finding for each replay that got past authentication (any answer but 401 or
 * 403: a 404 "unknown worker" or a 400 took the credentials too) where the same request
 * without them is refused (on a public route both pass; that proves nothing).
 */
export async function replayFindings(
  intruder: Intruder,
  url: string,
  recorded: readonly SquattedRequest[],
  secrets: readonly Secret[],
): Promise<string[]> {
  const { hostname, port } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  const attempt = (r: SquattedRequest, keep: (name: string) => boolean): HttpAttempt => {
    const headers: Record<string, string> = { connection: 'close' };
    for (const [name, value] of Object.entries(r.headers)) {
      if (value === undefined || HOP_HEADER.test(name) || !keep(name)) continue;
      headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    return {
      host,
      port: Number(port),
      method: r.method,
      path: r.path,
      headers,
      ...(r.method === 'GET' || r.method === 'HEAD' ? {} : { body: r.body }),
      timeoutMs: 10_000,
    };
  };
  const plan = recorded.flatMap((r) => [
    attempt(r, () => true),
    attempt(r, (name) => !CREDENTIAL_HEADER.test(name)),
  ]);
  if (plan.length === 0) return [];
  const outcomes = await intruder.run(
    'requests',
    { requests: plan, concurrency: 8 },
    plan.length * 10_000 + 10_000,
  );
  return recorded.flatMap((r, i) => {
    const replay = outcomes[2 * i];
    const bare = outcomes[2 * i + 1];
    if (replay === undefined || !('status' in replay) || refused(replay) || !refused(bare)) {
      return [];
    }
    const bareWhat =
      bare === undefined ? 'nothing' : 'status' in bare ? String(bare.status) : bare.error;
    return [
      `${r.method} ${r.path} replayed to ${url}: ${replay.status} ${redact(replay.body, secrets, 80)} (without its credentials: ${bareWhat})`,
    ];
  });
}

/**
 * Registrations the intruder forges from what a squatter recorded: a fake worker (its own
 * address, index 7 of the job) sent with the credential headers of each recorded worker
 * request (a bearer token, or a signature over another request). Pass them to
 * {@link replayFindings}: any that gets past authentication could route prompts to it.
 */
export function forgedRegistrations(
  recorded: readonly SquattedRequest[],
  deployment: string,
): SquattedRequest[] {
  return recorded
    .filter((r) => r.path.startsWith('/api/v1/workers'))
    .slice(0, 3)
    .map((r) => {
      const jobId = /\/api\/v1\/workers\/([^./]+)\./.exec(r.path)?.[1] ?? '1';
      const headers = Object.fromEntries(
        Object.entries(r.headers).filter(([name]) => CREDENTIAL_HEADER.test(name)),
      );
      return {
        at: r.at,
        method: 'POST',
        path: '/api/v1/workers/register',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({
          deployment,
          jobId,
          restartCount: 0,
          index: 7,
          host: '127.0.0.1',
          port: 9,
          gpus: [7],
          engine: 'mock',
          model: deployment,
          node: 'intruder',
          state: 'loading',
        }),
      };
    });
}

/** A finding for each recorded request whose headers or body hold a secret. */
export function recordedSecrets(
  who: string,
  recorded: readonly SquattedRequest[],
  secrets: readonly Secret[],
): string[] {
  return recorded.flatMap((r) => {
    const found = secretsIn(`${JSON.stringify(r.headers)}\n${r.body}`, secrets);
    return found.length === 0 ? [] : [`${who} ${r.method} ${r.path} holds ${found.join(', ')}`];
  });
}

/** A TCP port free on 127.0.0.1 now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

/** Resolves once something accepts connections on 127.0.0.1:`port`. */
async function listening(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) return true;
    await sleep(50);
  }
  return false;
}

/** The `es` CLI of this checkout (built). */
const ES_CLI = join(repoRoot, 'packages', 'client', 'dist', 'cli.mjs');

/**
 * The `es` CLI's admin call to a squatter (the intruder on a port the operator points it
 * at, as on `127.0.0.1:8780` when no scheduler listens there): what it sent.
 */
export async function esCliToSquatter(
  intruder: Intruder,
  adminKeyFile: string,
): Promise<{ requests: SquattedRequest[]; note: string }> {
  const port = await freePort();
  const squat = intruder.run(
    'squat',
    {
      host: '127.0.0.1',
      port,
      bindWithinMs: 5_000,
      // Long enough for a CLI started on a busy machine; released once it has sent its request.
      holdMs: 20_000,
      endAfterRequests: 1,
      status: 409,
      maxBodyBytes: 65_536,
    },
    45_000,
  );
  if (!(await listening(port, 5_000))) {
    const outcome = await squat;
    throw new Error(`the squatter did not bind 127.0.0.1:${port}: ${JSON.stringify(outcome)}`);
  }
  const es = await execa(
    process.execPath,
    [ES_CLI, 'jobs', '--url', `http://127.0.0.1:${port}`, '--admin-key-file', adminKeyFile],
    { reject: false, timeout: 20_000, env: { ES_ADMIN_KEY: '', ES_SCHEDULER_URL: '' } },
  );
  const outcome = await squat;
  return {
    requests: outcome.requests,
    note: `es jobs --url http://127.0.0.1:${port} (a squatter answering 409): exit ${es.exitCode ?? es.signal}, ${outcome.requests.length} requests reached the squatter (${outcome.requests.map((r) => `${r.method} ${r.path}`).join(', ') || 'none'}); stderr ${JSON.stringify(String(es.stderr).slice(0, 200))}`,
  };
}

/** The job's log lines (`<name>-<job id>.out` in the log directory). */
function jobLog(logDir: string, jobId: string): string {
  return readdirSync(logDir)
    .filter((f) => f.endsWith(`-${jobId}.out`))
    .map((f) => readFileSync(join(logDir, f), 'utf8'))
    .join('\n');
}

/** The jobs of `jobIds` whose worker sent one of `recorded` (its worker id in the path, or the job id in the body). */
export function jobsThatSent(
  jobIds: Iterable<string>,
  recorded: readonly SquattedRequest[],
): string[] {
  const fromWorkers = recorded.filter((r) => r.path.startsWith('/api/v1/workers'));
  return [...jobIds].filter((id) =>
    fromWorkers.some((r) => r.path.includes(`/${id}.`) || r.body.includes(`"${id}"`)),
  );
}

/**
 * Findings for the workers a squatter stopped: each job that served before and has no ready
 * worker now (`readyAfter`), each es-worker process of `before` that is gone.
 */
export function exitedWorkers(
  before: ReadonlyMap<string, readonly number[]>,
  readyAfter: ReadonlySet<string>,
): string[] {
  return [...before].flatMap(([id, pids]) => {
    const gone = pids.filter((pid) => !isAlive(pid));
    const what = [
      ...(readyAfter.has(id) ? [] : ['has no ready worker after the restart']),
      ...(gone.length === 0 ? [] : [`its es-worker (pid ${gone.join(', ')}) exited`]),
    ];
    return what.length === 0 ? [] : [`job ${id} served before the squat: ${what.join('; ')}`];
  });
}

/**
 * Findings for the jobs of `jobIds` whose log (`*-<job id>.out` in `logDir`) has no line
 * saying the worker ignored an answer that was not signed ({@link IGNORED_UNSIGNED}).
 */
export function silentWorkers(logDir: string, jobIds: readonly string[]): string[] {
  return jobIds
    .filter((id) => !IGNORED_UNSIGNED.test(jobLog(logDir, id)))
    .map((id) => `job ${id}'s log says nothing of ignoring the squatter's unsigned answers`);
}

/**
 * Runs every attack of another user of the cluster against the scheduler of `ctx` and its
 * jobs (see the module's comment). The load keeps running; its requests that met the
 * squatter (the scheduler's port held by someone else) are excused.
 * @example
 * const result = await otherUserScenario(ctx);
 * result.checks; // { 'engine paths answered without the engine key': 0, ... }
 */
export async function otherUserScenario(
  ctx: ChaosContext,
  options: OtherUserOptions = {},
): Promise<FaultResult> {
  const C = OTHER_USER_CHECKS;
  const logDir = options.logDir ?? dirname(ctx.scheduler.logFile);
  const secret = readFileSync(join(logDir, 'secret'), 'utf8');
  const adminKey = options.adminKey ?? ctx.scheduler.adminKey();
  if (options.intruder === undefined && !runningAsRoot()) {
    throw new ChaosError(
      'START_FAILED',
      'another user of the cluster: creating the unprivileged intruder user needs root (run scripts/chaos as root, as CI does, or pass options.intruder)',
    );
  }
  const intruder = options.intruder ?? createIntruder();
  const faultAt = Date.now();
  const notes: string[] = [`intruder ${intruder.user ?? 'a bare uid'} (uid ${intruder.uid})`];
  const checks: Record<string, number> = {};
  const record = (name: string, findings: readonly string[]) => {
    checks[name] = findings.length;
    for (const f of findings.slice(0, 8)) notes.push(`${name}: ${f}`);
    if (findings.length > 8) notes.push(`${name}: … ${findings.length - 8} more`);
  };
  const excused = new Set<string>();
  // How long each part took, for the notes (the short profile's budget is about a minute).
  const timings: string[] = [];
  let mark = faultAt;
  const took = (part: string) => {
    timings.push(`${part} ${((Date.now() - mark) / 1000).toFixed(1)} s`);
    mark = Date.now();
  };
  try {
    const url = ctx.scheduler.url;
    const status = await adminStatus(url, adminKey);
    const facts = privateFacts(status);
    const secrets = secretsOfRun(secret, facts.jobIds, [
      { name: 'the admin key', value: adminKey },
    ]);

    // Issue 14: the job processes' listeners, their engine paths, ps and readable files.
    const pids = jobProcesses(facts.jobIds);
    const listeners = listenersOf(pids);
    record(C.tcp, tcpOutsideWorkers(listeners));
    const targets = engineTargets(
      secret,
      facts.jobIds,
      listeners,
      status.deployments.flatMap((d) => d.workers),
      (pid) => facts.jobIds.find((id) => pidsOfJob(id, '').includes(pid)) ?? '',
    );
    const credentials = engineCredentials(secret);
    record(C.engine, [
      ...(targets.size === 0
        ? [`no address found for the ${facts.jobIds.length} jobs' processes (${pids.length} pids)`]
        : []),
      ...(await probeTcp(
        intruder,
        [...targets.values()].map((t) => t.target),
        credentials,
        secrets,
      )),
    ]);
    took('engine paths');
    record(C.unix, await probeUnix(intruder, listeners));
    record(C.processes, await scanProcesses(intruder, secrets));
    took('Unix sockets and ps');
    const since =
      options.since ??
      Math.min(
        faultAt,
        ...ctx.scheduler
          .events()
          .slice(0, 1)
          .map((e) => e.time),
      );
    record(
      C.files,
      await scanFiles(
        intruder,
        // The log directory's keys of unknown jobs too; the temp directory (shared with
        // other runs on this machine) for this run's keys only.
        [{ dir: logDir }],
        [...secrets, ANY_ENGINE_KEY],
      ).then(async (inLogDir) => [
        ...inLogDir,
        ...(await scanFiles(intruder, [{ dir: tmpdir(), since }], secrets)),
      ]),
    );
    notes.push(
      `${pids.length} job processes of jobs ${facts.jobIds.join(', ')}: ${listeners.filter((l) => l.kind === 'tcp').length} TCP and ${listeners.filter((l) => l.kind === 'unix').length} Unix listeners; ${targets.size} addresses probed`,
    );

    took('readable files');

    // Issue 15 (2): what the public routes say without a key.
    record(
      C.publicRoutes,
      await probePublicRoutes(intruder, url, facts, options.model ?? 'mock-model'),
    );

    took('public routes');

    // Issue 15 (1): the es CLI's admin request, sent to a squatter, replayed.
    const keyFile = join(logDir, 'other-user-admin-key');
    writeFileSync(keyFile, `${adminKey}\n`, { mode: 0o600 });
    const cli = await esCliToSquatter(intruder, keyFile);
    notes.push(cli.note);
    // Nothing sent is no proof: the attack did not happen (the CLI did not start in time).
    record(C.cliMissed, cli.requests.length > 0 ? [] : [cli.note]);
    record(C.cliKeys, recordedSecrets('the es CLI sent the squatter', cli.requests, secrets));
    record(C.cliReplay, await replayFindings(intruder, url, cli.requests, secrets));

    took('es CLI to a squatter');

    // Issue 15 (1): a squatter on the scheduler's worker port (where the workers report)
    // while it restarts.
    const squatMs = options.squatMs ?? 5_000;
    const serving = new Set(
      status.deployments.flatMap((d) =>
        d.workers.filter((w) => w.state === 'ready').map((w) => w.jobId),
      ),
    );
    const workersBefore = new Map([...serving].map((id) => [id, workerPids(id)]));
    const squat = intruder.run(
      'squat',
      {
        host: '127.0.0.1',
        port: ctx.scheduler.workerPort,
        bindWithinMs: 15_000,
        holdMs: squatMs,
        status: 409,
        maxBodyBytes: 65_536,
      },
      squatMs + 45_000,
    );
    const stopAt = Date.now();
    await ctx.scheduler.kill('SIGKILL');
    took('scheduler SIGKILL');
    const squatted = await squat;
    took('squatter');
    await ctx.scheduler.restart();
    took('scheduler restart');
    const servingAt = Date.now();
    for (const r of inWindow(ctx.load.records, stopAt, servingAt)) excused.add(r.id);
    if (!squatted.bound) {
      throw new Error(`the squatter could not bind the scheduler's worker port: ${squatted.error}`);
    }
    const recorded = squatted.requests;
    const fromWorkers = recorded.filter((r) => r.path.startsWith('/api/v1/workers'));
    notes.push(
      `squatter held the worker port 127.0.0.1:${ctx.scheduler.workerPort} ${squatted.releasedAt - squatted.boundAt} ms (${squatted.boundAt - stopAt} ms after the kill): ${recorded.length} requests, ${fromWorkers.length} of the worker protocol (${[...new Set(fromWorkers.map((r) => r.path))].slice(0, 6).join(', ')})`,
    );
    record(C.squatKeys, recordedSecrets('the squatter recorded', recorded, secrets));
    const talked = jobsThatSent(serving, recorded);
    record(
      C.squatMissed,
      talked.length > 0
        ? []
        : [`none of the jobs ${[...serving].join(', ')} sent the squatter a request`],
    );

    // The restarted scheduler: the same jobs serve again (within 20 s), and no replay passes.
    const readyJobs = async () =>
      new Set(
        (
          (await adminStatus(ctx.scheduler.url, adminKey).catch(() => undefined))?.deployments ?? []
        ).flatMap((d) => d.workers.filter((w) => w.state === 'ready').map((w) => w.jobId)),
      );
    let ready = await readyJobs();
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; ready = await readyJobs()) {
      if ([...serving].every((id) => ready.has(id))) break;
      await sleep(500);
    }
    took('workers back');
    // The worker protocol's and the admin API's requests: clients' chats need no credential here.
    const protocol = recorded.filter((r) => r.path.startsWith('/api/'));
    record(
      C.squatReplay,
      await replayFindings(intruder, ctx.scheduler.workerUrl, protocol, secrets),
    );
    record(
      C.squatForged,
      await replayFindings(
        intruder,
        ctx.scheduler.workerUrl,
        forgedRegistrations(recorded, options.model ?? 'mock-model'),
        secrets,
      ),
    );
    record(C.workersExited, exitedWorkers(workersBefore, ready));
    record(C.workersSilent, silentWorkers(logDir, talked));
    took('replays and logs');
  } finally {
    for (const id of excused) ctx.excused.add(id);
    if (options.intruder === undefined) intruder.remove();
  }
  let capacityMs: number | undefined;
  try {
    capacityMs =
      (await waitForCapacity(() => ctx.scheduler.url, ctx.target, ctx.capacityTimeoutMs, 1_000)) -
      faultAt;
  } catch (error) {
    notes.push((error as Error).message);
  }
  took('capacity back');
  notes.push(`took: ${timings.join(', ')}`);
  checks[capacityCheck(ctx.capacityTimeoutMs)] = capacityMs === undefined ? 1 : 0;
  const end = Date.now();
  await ctx.load.settled(end);
  const requests = inWindow(ctx.load.records, faultAt, end).filter((r) => !excused.has(r.id));
  if (excused.size > 0) {
    notes.push(`${excused.size} requests excused: they met the squatter or the stopped scheduler`);
  }
  const result: FaultResult = {
    fault: OTHER_USER_FAULT,
    requests: summarize(requests),
    detectionMs: [],
    checks,
    notes,
    window: { from: faultAt, to: end },
    excused: [...excused],
    run: 'main',
  };
  if (capacityMs !== undefined) result.capacityMs = capacityMs;
  ctx.log?.(`${OTHER_USER_FAULT}: ${JSON.stringify(result)}`);
  return result;
}
