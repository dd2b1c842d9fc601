/**
 * The squatter's findings in the "another user of the cluster" scenario: what it recorded on the
 * scheduler's port, whether its replays and forgeries were refused, what the `es` CLI sent it,
 * and whether workers kept serving and logged ignoring its unsigned answers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { repoRoot } from '@es/testkit';
import { isAlive } from './faults.js';
import { redact, secretsIn, type Secret } from './intruder/checks.js';
import {
  type HttpAttempt,
  type HttpOutcome,
  type Intruder,
  type SquattedRequest,
} from './intruder/user.js';

/** A line a worker logs when it ignores an answer that was not signed with the secret. */
export const IGNORED_UNSIGNED = /ignored an answer|not signed|wrongly signed|unsigned/i;

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
