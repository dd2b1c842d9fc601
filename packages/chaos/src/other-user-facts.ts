/**
 * What the "another user of the cluster" scenario attacks with and looks for: the run's keys and
 * secrets, the engines' addresses, the facts the public routes must not show, and the probe of
 * those routes.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { deriveEngineKey, deriveKeys } from '@es/protocol';
import { pidsOfJob } from './faults.js';
import {
  targetUrl,
  targetsOf,
  type Credential,
  type Listener,
  type Secret,
  type TcpTarget,
} from './intruder/checks.js';
import { type HttpAttempt, type Intruder } from './intruder/user.js';

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
 * must open one job only. Keyed by {@link targetUrl}. Only jobs with a process here count:
 * a job without one (a simulated worker's, one that ended) has no engine to try, and its
 * key tells nothing another running job's does not (with the 1,024 simulated workers' jobs
 * counted, the probe sent millions of requests and took minutes).
 */
export function engineTargets(
  secret: string,
  jobIds: Iterable<string>,
  listeners: readonly Listener[],
  workers: readonly { id: string; jobId: string; baseUrl: string }[],
  jobOf: (pid: number) => string,
): Map<string, EngineTarget> {
  const running = new Set(listeners.map((l) => jobOf(l.pid)));
  const jobs = [...jobIds].filter((id) => running.has(id));
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
    if (running.has(w.jobId) && !targets.has(targetUrl(t))) {
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
export function jobProcesses(jobIds: Iterable<string>): number[] {
  return [...jobIds].flatMap((id) =>
    pidsOfJob(id, '').filter((pid) => !['srun', 'slurmstepd'].includes(comm(pid))),
  );
}

/** The es-worker processes of a job. */
export function workerPids(jobId: string): number[] {
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
