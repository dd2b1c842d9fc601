import { describe, expect, it } from 'vitest';
import { PoolError, createRegistry, type PoolEvent } from '../src/index.js';
import { deployment, manualClock, registration } from './helpers.js';

function setup() {
  const clock = manualClock();
  const registry = createRegistry({ deployments: [deployment()], now: clock.now });
  const events: PoolEvent[] = [];
  registry.on((e) => events.push(e));
  return { clock, registry, events };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof PoolError ? `${error.status} ${error.code}` : String(error);
  }
  return undefined;
}

describe('registry', () => {
  it('resolves models by served name, path and deployment name', () => {
    const registry = createRegistry({
      deployments: [deployment('llama', { servedModelName: 'llama-70b', model: '/m/llama' })],
    });
    expect(registry.resolveModel('llama-70b')?.name).toBe('llama');
    expect(registry.resolveModel('/m/llama')?.name).toBe('llama');
    expect(registry.deployments()[0]?.modelNames).toEqual(['llama-70b', '/m/llama', 'llama']);
    expect(registry.resolveModel('other')).toBeUndefined();
  });

  it("sets and clears a deployment's expected ready time: a new view, deployment listeners told", () => {
    const registry = createRegistry({ deployments: [deployment('cold', { minNodes: 0 })] });
    const told: string[] = [];
    registry.onDeploymentChange((name) => told.push(name));
    const before = registry.deployments();
    expect(before[0]).toMatchObject({ scalesFromZero: true });
    expect(before[0]!.expectedReadyAt).toBeUndefined();

    registry.setDeploymentExpectedReady('cold', 1_700_000_090_000);
    const after = registry.deployments();
    // A new array with a new view (the watch stream tells a change by identity); the one a
    // caller held is left as it was.
    expect(after).not.toBe(before);
    expect(before[0]!.expectedReadyAt).toBeUndefined();
    expect(after[0]).toMatchObject({ expectedReadyAt: 1_700_000_090_000, scalesFromZero: true });
    expect(registry.resolveModel('cold')).toBe(after[0]);
    expect(told).toEqual(['cold']);

    // The same value again, or an unknown deployment: nothing changes, no one is told.
    registry.setDeploymentExpectedReady('cold', 1_700_000_090_000);
    registry.setDeploymentExpectedReady('unknown', 5);
    expect(registry.deployments()).toBe(after);
    expect(told).toEqual(['cold']);

    // A new config keeps the expected start of the node on its way.
    registry.addDeployment(deployment('cold', { minNodes: 0, maxNodes: 5 }));
    expect(registry.deployments()[0]!.expectedReadyAt).toBe(1_700_000_090_000);
    expect(told).toEqual(['cold', 'cold']);

    registry.setDeploymentExpectedReady('cold', undefined);
    expect(registry.deployments()[0]).not.toHaveProperty('expectedReadyAt');
    expect(told).toEqual(['cold', 'cold', 'cold']);
  });

  it('routes a worker only once it reports ready, and keeps the same object for inFlight', () => {
    const { registry } = setup();
    const { workerId } = registry.register(registration('42'));
    expect(workerId).toBe('42.0.0');
    expect(registry.worker(workerId)?.state).toBe('starting');
    expect(registry.routable('m')).toHaveLength(0);
    registry.heartbeat(workerId, { state: 'loading', restartCount: 0 });
    expect(registry.worker(workerId)?.state).toBe('loading');
    registry.heartbeat(workerId, {
      state: 'ready',
      restartCount: 0,
      load: { running: 2, waiting: 1 },
    });
    const first = registry.routable('m');
    expect(first.map((w) => w.baseUrl)).toEqual(['http://127.0.0.1:9000']);
    first[0]!.inFlight++;
    registry.heartbeat(workerId, { state: 'ready', restartCount: 0 });
    expect(registry.routable('m')).toBe(first);
    expect(registry.worker(workerId)).toMatchObject({
      inFlight: 1,
      load: { running: 2, waiting: 1 },
    });
  });

  it('adds the requests in flight through the data-plane processes to its own, per worker', () => {
    const { registry } = setup();
    const a = registry.register(registration('41', 0, { state: 'ready' })).workerId;
    const b = registry.register(registration('42', 0, { state: 'ready', port: 9100 })).workerId;
    registry.routable('m').find((w) => w.id === a)!.inFlight++;
    registry.recordDataPlaneInFlight(
      new Map([
        [a, 2],
        [b, 3],
        ['gone.0.0', 9],
      ]),
    );
    expect(registry.worker(a)?.inFlight).toBe(3);
    expect(registry.worker(b)?.inFlight).toBe(3);
    expect(registry.snapshot().workers.map((w) => w.inFlight)).toEqual([3, 3]);
    // The next totals replace these: a worker left out has none through the data plane.
    registry.recordDataPlaneInFlight(new Map([[b, 1]]));
    expect(registry.worker(a)?.inFlight).toBe(1);
    expect(registry.worker(b)?.inFlight).toBe(1);
  });

  it('takes a draining worker out of routing synchronously and keeps it out', () => {
    const { registry, events } = setup();
    const { workerId } = registry.register(registration('42', 0, { state: 'ready' }));
    expect(registry.routable('m')).toHaveLength(1);
    registry.drain(workerId, 'SIGTERM');
    expect(registry.routable('m')).toHaveLength(0);
    registry.heartbeat(workerId, { state: 'ready', restartCount: 0 });
    expect(registry.routable('m')).toHaveLength(0);
    expect(events.map((e) => e.type)).toEqual(['registered', 'ready', 'draining']);
    expect(events[2]).toMatchObject({ jobId: '42', workerId, reason: 'SIGTERM' });
  });

  it('takes a ready worker whose engine stopped answering out of routing, and back when it answers', () => {
    const { registry, events } = setup();
    const { workerId } = registry.register(registration('42', 0, { state: 'ready' }));
    const reason = 'engine not answering /health (3 probes in a row)';
    registry.heartbeat(workerId, { state: 'loading', restartCount: 0, reason });
    expect(registry.routable('m')).toHaveLength(0);
    expect(registry.worker(workerId)).toMatchObject({ state: 'loading', reason });
    expect(events.at(-1)).toMatchObject({ type: 'unready', workerId, reason });
    registry.heartbeat(workerId, { state: 'ready', restartCount: 0 });
    expect(registry.routable('m')).toHaveLength(1);
    expect(registry.worker(workerId)?.reason).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(['registered', 'ready', 'unready', 'ready']);
  });

  it('tells onRoutingChange listeners of every entry into and exit from routing, with the reason, in order', () => {
    const clock = manualClock();
    const registry = createRegistry({
      deployments: [deployment()],
      now: clock.now,
      ejectAfterFailures: 1,
      ejectCooldownMs: 1_000,
    });
    const changes: string[] = [];
    // Each change is seen after routable() already reflects it.
    registry.onRoutingChange((c) => {
      const listed = registry.routable(c.deployment).some((w) => w.id === c.workerId);
      changes.push(`${c.workerId} ${c.routable ? 'in' : 'out'} (${c.reason}) listed=${listed}`);
    });
    const a = registry.register(registration('41', 0, { state: 'ready' })).workerId;
    const b = registry.register(registration('42', 0, { state: 'ready' })).workerId;
    const c = registry.register(registration('43', 0, { state: 'ready' })).workerId;
    registry.heartbeat(b, { state: 'loading', restartCount: 0, reason: 'hung' });
    registry.heartbeat(b, { state: 'ready', restartCount: 0 });
    registry.reportOutcome(c, 'connect-error');
    clock.advance(1_001);
    registry.heartbeat(c, { state: 'ready', restartCount: 0 });
    registry.register(registration('41', 0, { state: 'ready' }));
    registry.drain(a, 'SIGTERM');
    registry.markGone(b, 'no heartbeat');
    expect(changes).toEqual([
      `${a} in (ready) listed=true`,
      `${b} in (ready) listed=true`,
      `${c} in (ready) listed=true`,
      `${b} out (unready: hung) listed=false`,
      `${b} in (ready) listed=true`,
      `${c} out (unready: ejected for 1000 ms after 1 failed attempts (connect-error)) listed=false`,
      `${c} in (ready) listed=true`,
      `${a} out (registered again) listed=false`,
      `${a} in (ready) listed=true`,
      `${a} out (draining: SIGTERM) listed=false`,
      `${b} out (gone: no heartbeat) listed=false`,
    ]);
  });

  it('tells onWorkerLost listeners of unready, failed and gone workers, never of draining ones', () => {
    const { registry } = setup();
    const lost: string[] = [];
    const off = registry.onWorkerLost((id, reason) => lost.push(`${id}: ${reason}`));
    const a = registry.register(registration('41', 0, { state: 'ready' })).workerId;
    const b = registry.register(registration('42', 0, { state: 'ready' })).workerId;
    const c = registry.register(registration('43', 0, { state: 'ready' })).workerId;
    registry.drain(a, 'SIGTERM');
    registry.heartbeat(b, { state: 'loading', restartCount: 0, reason: 'hung' });
    registry.heartbeat(c, { state: 'failed', restartCount: 0, reason: 'engine exited 1' });
    registry.deregister(a, 'drained');
    // The drained worker's requests finish on their own: not lost when it deregisters.
    expect(lost).toEqual([`${b}: hung`, `${c}: engine exited 1`]);
    off();
    registry.markGone(b, 'no heartbeat');
    expect(lost).toHaveLength(2);
  });

  it('fences stale incarnations with 409 and unknown workers with 404', () => {
    const { registry } = setup();
    const old = registry.register(registration('42', 0, { state: 'ready' })).workerId;
    expect(codeOf(() => registry.heartbeat('7.0.0', { state: 'ready', restartCount: 0 }))).toBe(
      '404 unknown_worker',
    );
    // The job was requeued: incarnation 1 registers, incarnation 0 is fenced.
    const next = registry.register(registration('42', 0, { restartCount: 1 })).workerId;
    expect(next).toBe('42.1.0');
    expect(registry.worker(old)?.state).toBe('gone');
    expect(codeOf(() => registry.heartbeat(old, { state: 'ready', restartCount: 0 }))).toBe(
      '409 fenced',
    );
    expect(codeOf(() => registry.register(registration('42', 1)))).toBe('409 fenced');
    // Seen in the cluster's list before any worker of incarnation 2 registered.
    registry.noteIncarnation('42', 'm', 2);
    expect(codeOf(() => registry.heartbeat(next, { state: 'ready', restartCount: 1 }))).toBe(
      '409 fenced',
    );
    expect(codeOf(() => registry.register(registration('42', 0, { deployment: 'x' })))).toBe(
      '404 unknown_deployment',
    );
  });

  it('answers 404 to a worker declared gone so it registers again', () => {
    const { registry } = setup();
    const { workerId } = registry.register(registration('42', 0, { state: 'ready' }));
    registry.markGone(workerId, 'heartbeat timeout');
    expect(registry.routable('m')).toHaveLength(0);
    expect(codeOf(() => registry.heartbeat(workerId, { state: 'ready', restartCount: 0 }))).toBe(
      '404 unknown_worker',
    );
    registry.register(registration('42', 0, { state: 'ready' }));
    expect(registry.routable('m')).toHaveLength(1);
  });

  it('fences the workers of an ended job', () => {
    const { registry } = setup();
    const { workerId } = registry.register(registration('42', 0, { state: 'ready' }));
    registry.endJob('42', 'job COMPLETED');
    expect(registry.worker(workerId)).toMatchObject({ state: 'gone', reason: 'job COMPLETED' });
    expect(codeOf(() => registry.register(registration('42')))).toBe('409 fenced');
  });

  it('resolves waitForRoutable when a worker becomes ready, false on abort', async () => {
    const { registry } = setup();
    const aborted = new AbortController();
    const gaveUp = registry.waitForRoutable('m', aborted.signal);
    const waiting = registry.waitForRoutable('m', new AbortController().signal);
    aborted.abort();
    await expect(gaveUp).resolves.toBe(false);
    registry.register(registration('42', 0, { state: 'ready' }));
    await expect(waiting).resolves.toBe(true);
    await expect(registry.waitForRoutable('nope', new AbortController().signal)).resolves.toBe(
      false,
    );
  });

  it('ejects a worker after consecutive failures for the cool-down, never the last one', () => {
    const { registry, clock } = setup();
    const a = registry.register(registration('1', 0, { state: 'ready' })).workerId;
    registry.register(registration('1', 1, { state: 'ready' }));
    registry.reportOutcome(a, 'connect-error');
    registry.reportOutcome(a, 'success');
    registry.reportOutcome(a, 'connect-error');
    registry.reportOutcome(a, 'upstream-5xx');
    expect(registry.routable('m')).toHaveLength(2);
    registry.reportOutcome(a, 'timeout');
    expect(registry.routable('m').map((w) => w.id)).toEqual(['1.0.1']);
    // Temporary: an `unready` event (it comes back), not a drain.
    expect(registry.recentEvents(1)[0]).toMatchObject({
      type: 'unready',
      workerId: a,
      reason: 'ejected for 10000 ms after 3 failed attempts (timeout)',
    });
    // The survivor fails too, but it is the last one: it stays.
    for (let i = 0; i < 5; i++) registry.reportOutcome('1.0.1', 'connect-error');
    expect(registry.routable('m')).toHaveLength(1);
    clock.advance(10_001);
    registry.heartbeat(a, { state: 'ready', restartCount: 0 });
    expect(registry.routable('m')).toHaveLength(2);
    expect(registry.worker('1.0.1')?.requestsServed).toBe(0);
    expect(registry.worker(a)?.requestsServed).toBe(1);
  });

  it('silentWorkers: those in service whose last heartbeat is older than the bound, as copies', () => {
    const { registry, clock } = setup();
    registry.register(registration('1', 0, { state: 'ready' }));
    registry.register(registration('1', 1, { state: 'loading' }));
    registry.register(registration('2', 0, { state: 'ready' }));
    registry.register(registration('3', 0, { state: 'ready' }));
    registry.register(registration('4', 0, { state: 'ready' }));
    registry.deregister('3.0.0', 'exit');
    registry.heartbeat('4.0.0', { state: 'failed', restartCount: 0 });
    const at = clock.now();
    clock.advance(1_000);
    registry.heartbeat('2.0.0', { state: 'ready', restartCount: 0 });
    expect(registry.silentWorkers(at).map((w) => w.id)).toEqual([]);
    const silent = registry.silentWorkers(at + 1);
    expect(silent.map((w) => w.id)).toEqual(['1.0.0', '1.0.1']);
    silent[0]!.state = 'gone';
    expect(registry.worker('1.0.0')?.state).toBe('ready');
  });

  it('drainWorker and drainJob take workers in service out of routing, and leave the others', () => {
    const { registry, events } = setup();
    registry.register(registration('1', 0, { state: 'ready' }));
    registry.register(registration('1', 1, { state: 'loading' }));
    registry.register(registration('1', 2, { state: 'failed' }));
    registry.register(registration('2', 0, { state: 'ready' }));
    registry.drainWorker('2.0.0', 'by hand');
    registry.drainWorker('9.0.0', 'unknown: nothing happens');
    expect(registry.worker('2.0.0')).toMatchObject({ state: 'draining', reason: 'by hand' });
    registry.drainJob('1', 'time limit');
    expect(registry.workers().map((w) => [w.id, w.state])).toEqual([
      ['1.0.0', 'draining'],
      ['1.0.1', 'draining'],
      ['1.0.2', 'failed'],
      ['2.0.0', 'draining'],
    ]);
    expect(registry.routable('m')).toEqual([]);
    expect(events.filter((e) => e.type === 'draining').map((e) => e.workerId)).toEqual([
      '2.0.0',
      '1.0.0',
      '1.0.1',
    ]);
  });

  it('keeps a bounded ring of recent events', () => {
    const registry = createRegistry({ deployments: [deployment()], eventBufferSize: 3 });
    for (let i = 0; i < 5; i++)
      registry.emit({ type: 'submitted', deployment: 'm', jobId: String(i) });
    expect(registry.recentEvents().map((e) => e.jobId)).toEqual(['2', '3', '4']);
    expect(registry.recentEvents(2).map((e) => e.jobId)).toEqual(['3', '4']);
  });
});
