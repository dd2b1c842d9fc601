/**
 * The hand-over of a draining worker (issue 13, point 5): `@es/protocol`'s worker client
 * against the real server side (`createWorkerApi` over a socket on 127.0.0.1) and a real
 * registry: the workers are announced to the `onWorkerLost` listeners with a reason
 * starting `hand-over` before the answer, recorded as `hand-over` events, and stay draining.
 */
import { createWorkerClient, deriveKeys } from '@es/protocol';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createRegistry, createWorkerApi } from '../src/index.js';
import type { RoutingChange } from '../src/index.js';
import { deployment, registration, serveOnLoopback } from './helpers.js';

const { workerKey } = deriveKeys('a shared secret');
const registry = createRegistry({ deployments: [deployment()], heartbeatIntervalMs: 1000 });
const app = createWorkerApi(registry, { workerKey });
let served: Awaited<ReturnType<typeof serveOnLoopback>>;
let client: ReturnType<typeof createWorkerClient>;

const lost: [string, string][] = [];
const routing: RoutingChange[] = [];
registry.onWorkerLost((workerId, reason) => lost.push([workerId, reason]));
registry.onRoutingChange((change) => routing.push(change));

beforeAll(async () => {
  served = await serveOnLoopback(app.fetch);
  client = createWorkerClient({ schedulerUrl: served.url, workerKey });
});

afterAll(() => served.close());

beforeEach(() => {
  lost.length = 0;
  routing.length = 0;
});

/** Registers `count` instances of job `jobId` and heartbeats them ready. */
async function readyWorkers(jobId: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let index = 0; index < count; index++) {
    const registered = await client.register(
      registration(jobId, index, { port: 9000 + Number(jobId) * 10 + index }),
    );
    if (registered.kind !== 'ok') throw new Error(`register: ${registered.kind}`);
    const id = registered.body.workerId;
    expect((await client.heartbeat(id, { state: 'ready', restartCount: 0 })).kind).toBe('ok');
    ids.push(id);
  }
  return ids;
}

const handOverEvents = (jobId: string) =>
  registry
    .recentEvents()
    .filter((event) => event.type === 'hand-over' && event.jobId === jobId)
    .map((event) => [event.workerId, event.reason]);

describe('hand-over over the worker protocol', () => {
  it('announces draining workers to onWorkerLost with a hand-over reason, once, and keeps them draining', async () => {
    const ids = await readyWorkers('11', 2);
    for (const id of ids) {
      expect((await client.drain(id, { reason: 'SIGTERM' })).kind).toBe('ok');
    }
    // A draining worker's requests are let finish: nothing is lost on the drain itself.
    expect(lost).toEqual([]);

    const answer = await client.handover({ workerIds: ids, reason: 'SIGTERM', stopInMs: 5000 });
    expect(answer).toEqual({
      ok: true,
      kind: 'ok',
      status: 200,
      body: { ok: true, handedOver: ids },
    });
    // Announced before the answer, so the proxy aborts its attempts while the engines run.
    const why = 'SIGTERM (engines stop in 5000 ms)';
    expect(lost).toEqual(ids.map((id) => [id, `hand-over: ${why}`]));
    expect(lost.every(([, reason]) => reason.startsWith('hand-over'))).toBe(true);
    expect(handOverEvents('11')).toEqual(ids.map((id) => [id, why]));
    for (const id of ids) expect(registry.worker(id)?.state).toBe('draining');
    expect(registry.routable('m').map((w) => w.id)).not.toContain(ids[0]);

    // Sent again (a retry): answered, but nobody is aborted twice.
    const again = await client.handover({ workerIds: ids, reason: 'SIGTERM', stopInMs: 4000 });
    expect(again.kind).toBe('ok');
    expect(lost).toHaveLength(2);
    expect(handOverEvents('11')).toHaveLength(2);

    // Then the worker stops its engines and deregisters: gone while draining, no new loss.
    for (const id of ids)
      expect((await client.deregister(id, { reason: 'SIGTERM' })).kind).toBe('ok');
    expect(lost).toHaveLength(2);
    expect(registry.worker(ids[0] ?? '')?.state).toBe('gone');
  });

  it('takes a worker whose drain notice was lost out of routing before announcing it', async () => {
    const [id = ''] = await readyWorkers('12', 1);
    expect(registry.routable('m').map((w) => w.id)).toContain(id);
    const answer = await client.handover({ workerIds: [id], reason: 'SIGTERM', stopInMs: 3000 });
    expect(answer.ok && answer.body.handedOver).toEqual([id]);
    expect(registry.worker(id)?.state).toBe('draining');
    expect(registry.routable('m').map((w) => w.id)).not.toContain(id);
    expect(routing).toContainEqual({
      deployment: 'm',
      workerId: id,
      routable: false,
      reason: 'draining: SIGTERM',
    });
    // The hand-over reason, not a second "lost" for the drain.
    expect(lost).toEqual([[id, 'hand-over: SIGTERM (engines stop in 3000 ms)']]);
  });

  it('ignores the ids it does not know and answers unknown (404) when it knows none', async () => {
    const [id = ''] = await readyWorkers('13', 1);
    const some = await client.handover({
      workerIds: ['999.0.0', id],
      reason: 'SIGTERM',
      stopInMs: 1000,
    });
    expect(some.ok && some.body.handedOver).toEqual([id]);
    expect(lost.map(([workerId]) => workerId)).toEqual([id]);

    const none = await client.handover({ workerIds: ['998.0.0'], reason: 'x', stopInMs: 0 });
    expect(none).toMatchObject({ ok: false, kind: 'unknown', status: 404, code: 'unknown_worker' });
  });

  it('rejects a hand-over that names no worker or a negative stop time (400)', async () => {
    for (const body of [
      { workerIds: [], reason: 'SIGTERM', stopInMs: 1000 },
      { workerIds: ['13.0.0'], reason: 'SIGTERM', stopInMs: -1 },
      { workerIds: ['13.0.0'], reason: 'SIGTERM' },
    ]) {
      const result = await client.handover(body as never);
      expect(result).toMatchObject({ ok: false, kind: 'rejected', status: 400 });
    }
    expect(lost).toEqual([]);
  });

  it('answers 401 to an unsigned or wrongly signed handover and announces nothing', async () => {
    const [id = ''] = await readyWorkers('14', 1);
    const unsigned = createWorkerClient({ schedulerUrl: client.schedulerUrl });
    const result = await unsigned.handover({ workerIds: [id], reason: 'x', stopInMs: 1 });
    expect(result).toMatchObject({ ok: false, kind: 'unauthorized', status: 401 });
    // Signed with another key, it cannot read the scheduler's signed answer either.
    const stranger = createWorkerClient({ schedulerUrl: client.schedulerUrl, workerKey: 'nope' });
    const forged = await stranger.handover({ workerIds: [id], reason: 'x', stopInMs: 1 });
    expect(forged).toMatchObject({ ok: false, kind: 'unreachable', unsigned: true });
    expect(lost).toEqual([]);
    expect(registry.worker(id)?.state).toBe('ready');
  });
});
