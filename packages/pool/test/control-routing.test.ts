import { describe, expect, it } from 'vitest';
import { createRegistry } from '../src/index.js';
import type { Registry, RoutingChange } from '../src/index.js';
import { deployment, registration } from './helpers.js';

function registry(): Registry {
  return createRegistry({
    deployments: [deployment('m', { tensorParallelSize: 1, gpusPerNode: 1, maxNodes: 4 })],
    ejectAfterFailures: 3,
  });
}

function ready(r: Registry, jobId: string): string {
  const { workerId } = r.register(registration(jobId, 0, { gpus: [0] }));
  r.heartbeat(workerId, { state: 'ready', restartCount: 0, load: { running: 0, waiting: 0 } });
  return workerId;
}

const ids = (workers: readonly { id: string }[]) => workers.map((w) => w.id);

describe('control-plane routable set', () => {
  it('keeps a worker this process ejected, loses a drained one', () => {
    const r = registry();
    const control: RoutingChange[] = [];
    const local: RoutingChange[] = [];
    r.onControlRoutingChange((change) => control.push(change));
    r.onRoutingChange((change) => local.push(change));
    const a = ready(r, '1');
    const b = ready(r, '2');
    const c = ready(r, '3');
    for (let i = 0; i < 3; i += 1) r.reportOutcome(a, 'connect-error');
    expect(ids(r.routable('m'))).toEqual([b, c]);
    expect(ids(r.controlRoutable('m'))).toEqual([a, b, c]);
    expect(local.at(-1)).toMatchObject({ workerId: a, routable: false });
    expect(control.map((ch) => [ch.workerId, ch.routable])).toEqual([
      [a, true],
      [b, true],
      [c, true],
    ]);

    r.drain(b, 'preempted');
    expect(ids(r.controlRoutable('m'))).toEqual([a, c]);
    expect(control.at(-1)).toMatchObject({ workerId: b, routable: false });
    expect(control.at(-1)!.reason).toMatch(/^draining/);
    r.deregister(c, 'exit');
    expect(ids(r.controlRoutable('m'))).toEqual([a]);
    expect(ids(r.controlRoutable('unknown'))).toEqual([]);
  });
});
