import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  WORKER_API_PREFIX,
  WORKER_SIGNATURE_HEADERS,
  createWorkerRequestVerifier,
  deriveKeys,
  formatWorkerId,
  openAIErrorBody,
  signWorkerAnswer,
} from '@es/protocol';
import type { RegisterRequest } from '@es/protocol';

/** The secret of the workers the fake scheduler expects, unless told another. */
export const TEST_SECRET = 'test-secret';

/** One request the fake scheduler received. */
export interface SchedulerCall {
  route: 'register' | 'heartbeat' | 'drain' | 'deregister' | 'handover';
  /** Ids of a handover call: the body's `workerIds`, joined with commas. */
  workerId: string;
  body: Record<string, unknown>;
  /** The `authorization` header, if any was sent (none should be: nothing reusable). */
  authorization: string | undefined;
  /** The verdict on the request's signature: `ok`, `unsigned`, or the refusal's code. */
  signature: string;
  /** `Date.now()` on arrival. */
  at: number;
}

/** A running {@link startFakeScheduler}: what it received, and the knobs tests steer it with. */
export interface FakeScheduler {
  url: string;
  /** Every call, in the order they arrived. */
  calls: SchedulerCall[];
  /** The interval a registration is told to heartbeat at (may be changed between calls). */
  heartbeatIntervalMs: number;
  /** Ids whose next heartbeat gets 404 (the scheduler "restarted"). */
  forget: Set<string>;
  /** When true, every call is answered 409 (fenced). */
  fence: boolean;
  /** Routes whose next call is recorded, then its connection cut with no answer. */
  dropNext: Set<SchedulerCall['route']>;
  /** Runs when a drain notice arrives, before it is answered. */
  onDrain: ((workerId: string) => Promise<void> | void) | undefined;
  /** Runs when any call arrives, before it is recorded and answered. */
  onCall: ((call: SchedulerCall) => void) | undefined;
  /** Resolves with the first call matching `test`, waiting up to `timeoutMs`. */
  waitFor(test: (call: SchedulerCall) => boolean, timeoutMs?: number): Promise<SchedulerCall>;
  /** The calls of one route so far. */
  of(route: SchedulerCall['route']): SchedulerCall[];
  close(): Promise<void>;
}

/**
 * A small scheduler speaking the worker protocol on 127.0.0.1 (port 0), recording every call.
 * It knows the workers' secret (`secret`, default {@link TEST_SECRET}): it checks each
 * signed request's signature, as the real one does, and signs its answers (a worker with the
 * secret ignores unsigned ones; one without it signs nothing, recorded as `unsigned`). It
 * answers heartbeats, drains and deregistrations of registered workers only (404 otherwise).
 * Tests steer it: answer 404 to the next heartbeat of an id, 409 to everything, or no
 * answer to the next call of a route.
 * @example
 * const scheduler = await startFakeScheduler(200, 'top secret');
 * // ... start a worker with --scheduler-url scheduler.url and that secret ...
 * const drain = await scheduler.waitFor((call) => call.route === 'drain');
 * await scheduler.close();
 */
export async function startFakeScheduler(
  heartbeatIntervalMs = 200,
  secret = TEST_SECRET,
): Promise<FakeScheduler> {
  const key = deriveKeys(secret).workerKey;
  // The restart rule is the real scheduler's business: here only signature and nonce count.
  const verifier = createWorkerRequestVerifier({ key, startedAt: 0 });
  const waiters = new Set<() => void>();
  const known = new Set<string>();
  const scheduler: FakeScheduler = {
    url: '',
    calls: [],
    heartbeatIntervalMs,
    forget: new Set(),
    fence: false,
    dropNext: new Set(),
    onDrain: undefined,
    onCall: undefined,
    waitFor: (test, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = scheduler.calls.find(test);
          if (!hit) return false;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(hit);
          return true;
        };
        const wake = () => void check();
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(new Error(`fake scheduler: no matching call within ${timeoutMs} ms`));
        }, timeoutMs);
        if (!check()) waiters.add(wake);
      }),
    of: (route) => scheduler.calls.filter((call) => call.route === route),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      void (async () => {
        const text = Buffer.concat(chunks).toString('utf8');
        // A worker without a secret signs nothing: accepted, recorded as `unsigned`.
        const check =
          req.headers[WORKER_SIGNATURE_HEADERS.signature] === undefined
            ? undefined
            : verifier.verify({
                method: req.method ?? '',
                path: req.url ?? '',
                body: text,
                header: (name) => req.headers[name] as string | undefined,
              });
        const path = (req.url ?? '').slice(WORKER_API_PREFIX.length + 1);
        const body = JSON.parse(text || '{}') as Record<string, unknown>;
        const [first, action] = path.split('/');
        let route: SchedulerCall['route'];
        let workerId: string;
        if (first === 'handover') {
          route = 'handover';
          workerId = ((body.workerIds as string[] | undefined) ?? []).join(',');
        } else if (first === 'register') {
          const request = body as unknown as RegisterRequest;
          route = 'register';
          workerId = formatWorkerId(request.jobId, request.restartCount, request.index);
        } else {
          route = action as SchedulerCall['route'];
          workerId = decodeURIComponent(first ?? '');
        }
        const call: SchedulerCall = {
          route,
          workerId,
          body,
          authorization: req.headers.authorization,
          signature: check === undefined ? 'unsigned' : check.ok ? 'ok' : check.code,
          at: Date.now(),
        };
        scheduler.onCall?.(call);
        if (route === 'drain') await scheduler.onDrain?.(workerId);
        scheduler.calls.push(call);
        for (const wake of [...waiters]) wake();
        if (scheduler.dropNext.delete(route)) {
          req.socket.destroy();
          return;
        }
        const send = (status: number, value: unknown) => {
          const answer = JSON.stringify(value);
          const nonce = (req.headers[WORKER_SIGNATURE_HEADERS.nonce] as string | undefined) ?? '';
          res.writeHead(status, {
            'content-type': 'application/json',
            [WORKER_SIGNATURE_HEADERS.signature]: signWorkerAnswer(key, {
              nonce,
              status,
              body: answer,
            }),
          });
          res.end(answer);
        };
        if (check !== undefined && !check.ok) {
          send(check.status, openAIErrorBody(check.code, check.message, check.status, check.param));
          return;
        }
        if (scheduler.fence) {
          send(409, {
            error: {
              message: 'job 1234 incarnation 2 has ended: exit',
              type: 'conflict',
              code: 'fenced',
            },
          });
          return;
        }
        if (route === 'register') {
          known.add(workerId);
          send(200, { workerId, heartbeatIntervalMs: scheduler.heartbeatIntervalMs });
          return;
        }
        if (route === 'handover') {
          const handedOver = ((body.workerIds as string[] | undefined) ?? []).filter((id) =>
            known.has(id),
          );
          if (handedOver.length > 0) send(200, { ok: true, handedOver });
          else
            send(404, {
              error: { message: 'unknown workers', type: 'not_found', code: 'unknown' },
            });
          return;
        }
        if (route === 'heartbeat' && scheduler.forget.delete(workerId)) known.delete(workerId);
        if (!known.has(workerId)) {
          send(404, { error: { message: 'unknown worker', type: 'not_found', code: 'unknown' } });
          return;
        }
        send(200, { ok: true });
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  scheduler.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return scheduler;
}
