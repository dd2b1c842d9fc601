/**
 * The checks of the "another user of the cluster" scenario, each shown to fail: a public
 * route that shows an engine address, node name and job id; a request with a key sent to a
 * squatter; a server that accepts a replayed request (and one that refuses it, and a public
 * route that accepts it without credentials too); a worker that exited; a job log that says
 * nothing of unsigned answers. Real processes and sockets on 127.0.0.1; the intruder (an
 * unprivileged user) needs root, as CI runs, and those tests are skipped otherwise.
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveEngineKey } from '@es/protocol';
import {
  createIntruder,
  engineTargets,
  exitedWorkers,
  forgedRegistrations,
  jobsThatSent,
  OTHER_USER_CHECKS,
  OTHER_USER_FAULT,
  probePublicRoutes,
  recordedSecrets,
  renderReport,
  replayFindings,
  runningAsRoot,
  silentWorkers,
  type Intruder,
  type Listener,
  type PrivateFacts,
  type SquattedRequest,
} from '../src/index.js';

const FACTS: PrivateFacts = {
  addresses: ['127.0.0.1:41234'],
  ports: [41234],
  nodes: ['gpu-node-7'],
  jobIds: ['4242'],
};

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

/** A real HTTP server on 127.0.0.1 answering with `handler`; its base URL. */
async function serve(
  handler: (req: IncomingMessage, body: string, res: ServerResponse) => void,
): Promise<string> {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => handler(req, body, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

describe('checks that need no intruder', () => {
  it('the report gives the scenario a section listing each of its checks, broken ones marked', () => {
    const report = renderReport(
      [
        {
          fault: OTHER_USER_FAULT,
          requests: { sent: 20, succeeded: 20, retried: 0, erroredCleanly: 0, lost: 0 },
          detectionMs: [],
          checks: { [OTHER_USER_CHECKS.engine]: 0, [OTHER_USER_CHECKS.squatReplay]: 5 },
          notes: ['replayed worker requests accepted: POST /api/v1/workers/1.0.0/heartbeat …'],
        },
      ],
      { Commit: 'abc' },
    );
    expect(report).toContain(
      [
        '## Another user of the cluster (attacks run as an unprivileged user; every figure must be 0)',
        '',
        '| Check | Violations |',
        '| --- | ---: |',
        '| engine paths answered without the engine key | 0 |',
        '| replayed worker requests accepted | 5 ✗ |',
      ].join('\n'),
    );
    expect(report).toContain(`- Verdict: 1 fault(s) broke a promise: ${OTHER_USER_FAULT}`);
  });

  it('a worker whose process exited, and a job that no longer serves, are reported', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = child.pid ?? 0;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const alive = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      child.kill('SIGKILL');
      await exited;
      const before = new Map([
        ['4242', [pid]],
        ['4243', [alive.pid ?? 0]],
      ]);
      expect(exitedWorkers(before, new Set(['4243']))).toEqual([
        `job 4242 served before the squat: has no ready worker after the restart; its es-worker (pid ${pid}) exited`,
      ]);
      expect(exitedWorkers(before, new Set(['4242', '4243']))).toEqual([
        `job 4242 served before the squat: its es-worker (pid ${pid}) exited`,
      ]);
      expect(exitedWorkers(new Map([['4243', [alive.pid ?? 0]]]), new Set(['4243']))).toEqual([]);
    } finally {
      alive.kill('SIGKILL');
    }
  });

  it('a job log without a line about an ignored unsigned answer is reported', () => {
    const dir = mkdtempSync(join(tmpdir(), 'es-other-user-logs-'));
    try {
      writeFileSync(join(dir, 'es-m-4242.out'), '{"msg":"heartbeat: fenced (409): exiting"}\n');
      writeFileSync(
        join(dir, 'es-m-4243.out'),
        '{"msg":"POST http://127.0.0.1:8780/api/v1/workers/4243.0.0/heartbeat: ignored an answer (HTTP 409) not signed"}\n',
      );
      expect(silentWorkers(dir, ['4242', '4243'])).toEqual([
        "job 4242's log says nothing of ignoring the squatter's unsigned answers",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('jobs that sent the squatter a request: by worker id in the path or job id in the body', () => {
    const request = (path: string, body = ''): SquattedRequest => ({
      at: 0,
      method: 'POST',
      path,
      headers: {},
      body,
    });
    expect(
      jobsThatSent(
        ['4242', '4243', '4244'],
        [
          request('/api/v1/workers/4242.0.1/heartbeat'),
          request('/api/v1/workers/register', '{"jobId":"4243"}'),
          request('/v1/chat/completions', '{"jobId":"4244"}'),
        ],
      ),
    ).toEqual(['4242', '4243']);
  });

  it("engine targets: every address a job process listens on, with the other jobs' keys, then the advertised ones none listens on", () => {
    const listeners: Listener[] = [
      { kind: 'tcp', pid: 10, args: 'es-worker a', host: '0.0.0.0', port: 41234 },
      { kind: 'tcp', pid: 11, args: 'es-worker b', host: '127.0.0.1', port: 41235 },
      { kind: 'unix', pid: 11, args: 'engine b', path: '/tmp/engine-0.sock' },
    ];
    const workers = [
      { id: '4242.0.0', jobId: '4242', baseUrl: 'http://127.0.0.1:41234' },
      { id: '4243.0.0', jobId: '4243', baseUrl: 'http://[::1]:41299' },
      // A simulated worker: its job has no process here, so neither its address nor its key
      // is tried.
      { id: '9000001.0.0', jobId: '9000001', baseUrl: 'http://127.0.0.1:45000' },
    ];
    const keyOf = (id: string) => ({
      name: `the engine key of job ${id}`,
      headers: { authorization: `Bearer ${deriveEngineKey('s3cret', id)}` },
    });
    const targets = engineTargets(
      's3cret',
      ['4242', '4243', '9000001'],
      listeners,
      workers,
      (pid) => (pid === 10 ? '4242' : '4243'),
    );
    expect([...targets]).toEqual([
      [
        'http://127.0.0.1:41234',
        {
          jobId: '4242',
          target: {
            host: '127.0.0.1',
            port: 41234,
            label: 'pid 10 (es-worker a)',
            credentials: [keyOf('4243')],
          },
        },
      ],
      [
        'http://127.0.0.1:41235',
        {
          jobId: '4243',
          target: {
            host: '127.0.0.1',
            port: 41235,
            label: 'pid 11 (es-worker b)',
            credentials: [keyOf('4242')],
          },
        },
      ],
      [
        'http://[::1]:41299',
        {
          jobId: '4243',
          target: {
            host: '::1',
            port: 41299,
            label: 'worker 4243.0.0 (advertised)',
            credentials: [keyOf('4242')],
          },
        },
      ],
    ]);
  });
});

const suite = runningAsRoot() ? describe : describe.skip;

suite(`as the intruder${runningAsRoot() ? '' : ' (skipped: not root)'}`, () => {
  let intruder: Intruder;
  beforeAll(() => {
    intruder = createIntruder();
  });
  afterAll(() => intruder?.remove());

  it('public routes: a scheduler that shows an engine address, node name and job id is reported; one with counts only is not', async () => {
    const leaky = await serve((req, _body, res) => {
      if (req.url === '/cluster_status') {
        json(res, 200, {
          ready_workers: 1,
          workers: [
            {
              worker_id: '4242.0.1',
              hostname: 'gpu-node-7',
              base_url: 'http://127.0.0.1:41234/v1',
              port: 41234,
              slurm_job_id: '4242',
            },
          ],
        });
      } else if (req.url === '/v1/chat/completions') {
        res.writeHead(200, {
          'content-type': 'application/json',
          'x-elastic-selected-endpoint': 'http://127.0.0.1:41234',
          // Clients get the worker's id (the load records it); only its address is the admin's.
          'x-elastic-selected-worker-id': '4242.0.1',
        });
        res.end('{"choices":[]}');
      } else json(res, 200, { status: 'ok', ready_workers: 1 });
    });
    const findings = await probePublicRoutes(intruder, leaky, FACTS, 'mock-model');
    const at = (path: string) => findings.filter((f) => f.includes(` at ${path}:`));
    expect(at('workers[0].worker_id')).toEqual([
      'GET /cluster_status (no key) shows job id 4242 at workers[0].worker_id: "4242.0.1"',
    ]);
    expect(at('workers[0].hostname')).toEqual([
      'GET /cluster_status (no key) shows node name gpu-node-7 at workers[0].hostname: "gpu-node-7"',
    ]);
    expect(at('workers[0].base_url')).toHaveLength(1);
    expect(at('workers[0].port')).toHaveLength(1);
    expect(at('workers[0].slurm_job_id')).toHaveLength(1);
    expect(at('x-elastic-selected-endpoint')).toEqual([
      'POST /v1/chat/completions (no key) header shows engine address 127.0.0.1:41234 at x-elastic-selected-endpoint: "http://127.0.0.1:41234"',
    ]);
    expect(findings).toHaveLength(6);

    const quiet = await serve((req, _body, res) =>
      req.url === '/v1/chat/completions'
        ? json(res, 200, { choices: [] })
        : json(res, 200, {
            status: 'ok',
            ready_workers: 1,
            total_workers: 1,
            workers: [{ status: 'READY', requests_served: 41234 }],
          }),
    );
    expect(await probePublicRoutes(intruder, quiet, FACTS, 'mock-model')).toEqual([]);
  });

  it('squatter: with endAfterRequests it lets the port go 500 ms after that many requests, not after holdMs', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createNetServer();
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() =>
          resolve(typeof address === 'object' && address !== null ? address.port : 0),
        );
      });
    });
    const startedAt = Date.now();
    const squat = intruder.run('squat', {
      host: '127.0.0.1',
      port,
      bindWithinMs: 5_000,
      holdMs: 60_000,
      status: 409,
      maxBodyBytes: 1_024,
      endAfterRequests: 1,
    });
    let status: number | undefined;
    for (let i = 0; i < 100 && status === undefined; i++) {
      status = await fetch(`http://127.0.0.1:${port}/api/v1/admin/status`).then(
        (r) => r.status,
        () => new Promise<undefined>((r) => setTimeout(() => r(undefined), 20)),
      );
    }
    expect(status).toBe(409);
    const outcome = await squat;
    expect(outcome.requests).toHaveLength(1);
    // Well under the 60 s hold, with room for a busy machine.
    expect(Date.now() - startedAt).toBeLessThan(20_000);
  });

  it('squatter: a request with a bearer key is recorded with it, and its replay to a server that takes the key is reported', async () => {
    const key = 'a'.repeat(64);
    const port = await new Promise<number>((resolve) => {
      const probe = createNetServer();
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() =>
          resolve(typeof address === 'object' && address !== null ? address.port : 0),
        );
      });
    });
    const squat = intruder.run('squat', {
      host: '127.0.0.1',
      port,
      bindWithinMs: 5_000,
      holdMs: 1_500,
      status: 409,
      maxBodyBytes: 65_536,
    });
    // As a worker of the old protocol would: a heartbeat with its bearer token.
    let answer: { status: number; body: string } | undefined;
    for (let i = 0; i < 50 && answer === undefined; i++) {
      answer = await fetch(`http://127.0.0.1:${port}/api/v1/workers/4242.0.1/heartbeat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{"state":"ready"}',
      }).then(
        async (r) => ({ status: r.status, body: await r.text() }),
        () => new Promise<undefined>((r) => setTimeout(() => r(undefined), 20)),
      );
    }
    expect(answer?.status).toBe(409);
    expect(JSON.parse(answer?.body ?? '{}')).toMatchObject({ error: { code: 'fenced' } });
    const outcome = await squat;
    expect(outcome.bound).toBe(true);
    const recorded = outcome.requests;
    expect(recorded.map((r) => `${r.method} ${r.path} ${r.body}`)).toEqual([
      'POST /api/v1/workers/4242.0.1/heartbeat {"state":"ready"}',
    ]);
    const secrets = [{ name: 'the worker token', value: key }];
    expect(recordedSecrets('the squatter recorded', recorded, secrets)).toEqual([
      'the squatter recorded POST /api/v1/workers/4242.0.1/heartbeat holds the worker token',
    ]);
    expect(
      recordedSecrets('the squatter recorded', recorded, [{ name: 'x', value: 'b'.repeat(64) }]),
    ).toEqual([]);

    // A scheduler that takes the bearer token: the replay is accepted.
    const takesKey = await serve((req, _body, res) =>
      req.headers.authorization === `Bearer ${key}`
        ? json(res, 200, { ok: true })
        : json(res, 401, {
            error: { message: 'no', type: 'auth', param: null, code: 'unauthorized' },
          }),
    );
    expect(await replayFindings(intruder, takesKey, recorded, secrets)).toEqual([
      expect.stringMatching(
        /^POST \/api\/v1\/workers\/4242\.0\.1\/heartbeat replayed to http:\/\/127\.0\.0\.1:\d+: 200 .* \(without its credentials: 401\)$/,
      ),
    ]);
    // One that refuses what it has seen (a nonce it remembers): nothing to report.
    const seen = new Set<string>();
    const refusesReplays = await serve((req, body, res) => {
      const nonce = `${req.url} ${body}`;
      if (seen.has(nonce))
        json(res, 401, {
          error: { message: 'replayed', type: 'auth', param: null, code: 'replayed' },
        });
      else {
        seen.add(nonce);
        json(res, 200, { ok: true });
      }
    });
    seen.add('/api/v1/workers/4242.0.1/heartbeat {"state":"ready"}');
    expect(await replayFindings(intruder, refusesReplays, recorded, secrets)).toEqual([]);
    // Past authentication is accepted, whatever comes after it (the worker is unknown now).
    const unknownWorker = await serve((req, _body, res) =>
      req.headers.authorization === `Bearer ${key}`
        ? json(res, 404, {
            error: {
              message: 'unknown worker',
              type: 'not_found',
              param: null,
              code: 'unknown_worker',
            },
          })
        : json(res, 401, {
            error: { message: 'no', type: 'auth', param: null, code: 'unauthorized' },
          }),
    );
    expect(await replayFindings(intruder, unknownWorker, recorded, secrets)).toEqual([
      expect.stringMatching(
        / replayed to .*: 404 .*unknown worker.* \(without its credentials: 401\)$/,
      ),
    ]);
    // A public route answers 200 with or without credentials: that proves nothing.
    const open = await serve((_req, _body, res) => json(res, 200, { status: 'ok' }));
    expect(await replayFindings(intruder, open, recorded, secrets)).toEqual([]);

    // A registration forged with the recorded credentials: taken by a scheduler that takes
    // the bearer token, refused by one that checks a signature over the path and body.
    const forged = forgedRegistrations(recorded, 'mock-model');
    expect(forged.map((r) => [r.path, JSON.parse(r.body).jobId, r.headers.authorization])).toEqual([
      ['/api/v1/workers/register', '4242', `Bearer ${key}`],
    ]);
    expect(await replayFindings(intruder, takesKey, forged, secrets)).toEqual([
      expect.stringMatching(/^POST \/api\/v1\/workers\/register replayed to .*: 200 /),
    ]);
    const signs = await serve((req, body, res) => {
      const expected = createHmac('sha256', key).update(`${req.url}\n${body}`).digest('hex');
      if (req.headers['x-es-signature'] === expected) json(res, 200, { ok: true });
      else
        json(res, 401, {
          error: { message: 'bad signature', type: 'auth', param: null, code: 'bad_signature' },
        });
    });
    const signed = forgedRegistrations(
      [
        {
          ...recorded[0]!,
          headers: {
            'x-es-signature': createHmac('sha256', key)
              .update(`${recorded[0]!.path}\n${recorded[0]!.body}`)
              .digest('hex'),
          },
        },
      ],
      'mock-model',
    );
    expect(await replayFindings(intruder, signs, signed, secrets)).toEqual([]);
  });
});
