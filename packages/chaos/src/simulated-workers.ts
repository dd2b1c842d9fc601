/**
 * Simulated workers for the chaos suite's scale fault, run as their own process (forked by
 * `scaleScenario`): N real HTTP registrations, each worker heartbeating once a second from
 * its registration on (as a real worker does), then deregistration; the heartbeats are
 * counted from the moment all are registered. In their own process, as independent nodes are, so that
 * neither the load generator nor these heartbeats measure the other's event-loop delay.
 *
 * Protocol (IPC): the parent sends one {@link SimulationRequest}; this process answers
 * `{ type: 'heartbeating', ids, refused }` once all are registered (the counting starts), then
 * `{ type: 'done', ... }` ({@link SimulationResult}); on the parent's next message it
 * deregisters every simulated worker and exits.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { audienceOf, signWorkerRequest } from '@es/protocol';

/** What the parent asks for. */
export interface SimulationRequest {
  /** `<scheduler>/api/v1/workers` */
  base: string;
  /** `deriveKeys(secret).workerKey`: signs every request (as a real worker's client does). */
  workerKey: string;
  deployment: string;
  model: string;
  count: number;
  durationMs: number;
}

/** What the simulation measured. */
export interface SimulationResult {
  type: 'done';
  sent: number;
  answered: number;
  latencyP50: number | undefined;
  latencyP99: number | undefined;
  failures: Record<string, number>;
  /** This process's own event-loop delay (ms): part of every latency above. */
  loopDelayP99: number;
}

function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** POST `body` to `<base><route>`, signed with the worker key at the moment it is sent. */
function signedPost(
  request: SimulationRequest,
  route: string,
  body: unknown,
  signal?: AbortSignal,
): Promise<Response> {
  const url = `${request.base}${route}`;
  const text = JSON.stringify(body);
  const signature = signWorkerRequest(request.workerKey, {
    method: 'POST',
    path: new URL(url).pathname,
    body: text,
    audience: audienceOf(url),
  });
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...signature },
    body: text,
    ...(signal ? { signal } : {}),
  });
}

async function simulate(request: SimulationRequest): Promise<void> {
  const ids: string[] = [];
  let refused = 0;
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  // Counted from the moment every worker is registered (the fault's window).
  let measuring = false;
  let sent = 0;
  let answered = 0;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let stopped = false;
  const beat = async (id: string) => {
    const counted = measuring;
    if (counted) sent++;
    const started = performance.now();
    try {
      const response = await signedPost(
        request,
        `/${id}/heartbeat`,
        { state: 'loading', restartCount: 0 },
        AbortSignal.timeout(5_000),
      );
      await response.body?.cancel();
      if (!counted) return;
      latencies.push(performance.now() - started);
      if (response.status === 200) answered++;
      else failures[response.status] = (failures[response.status] ?? 0) + 1;
    } catch {
      if (counted) failures[0] = (failures[0] ?? 0) + 1;
    }
  };
  // Each worker heartbeats from its registration on, once a second, as a real one does
  // (registering all 1,024 first takes longer than the scheduler's heartbeat timeout).
  // The registrations are sequential, so the heartbeats spread over the second.
  const loops: Promise<void>[] = [];
  const heartbeatFrom = async (id: string) => {
    while (!stopped) {
      const next = Date.now() + 1_000;
      await sleep(Math.max(0, next - Date.now()));
      if (stopped) break;
      await beat(id);
    }
  };
  for (let i = 0; i < request.count; i++) {
    const response = await signedPost(request, '/register', {
      deployment: request.deployment,
      jobId: String(9_000_000 + i),
      restartCount: 0,
      index: 0,
      host: '127.0.0.1',
      port: 9,
      gpus: [0],
      engine: 'mock',
      model: request.model,
      node: `sim${i}`,
      state: 'loading',
    });
    if (response.ok) {
      const { workerId } = (await response.json()) as { workerId: string };
      ids.push(workerId);
      loops.push(heartbeatFrom(workerId));
    } else {
      refused++;
      await response.body?.cancel();
    }
  }
  process.send?.({ type: 'heartbeating', ids, refused });
  measuring = true;
  loopDelay.enable();
  await sleep(request.durationMs);
  stopped = true;
  await Promise.all(loops);
  loopDelay.disable();
  const result: SimulationResult = {
    type: 'done',
    sent,
    answered,
    latencyP50: percentile(latencies, 50),
    latencyP99: percentile(latencies, 99),
    failures,
    // The histogram counts whole sampling intervals: what exceeds the resolution is delay.
    loopDelayP99: Math.max(0, loopDelay.percentile(99) / 1e6 - 10),
  };
  process.send?.(result);
  // Deregister when the parent says so (after it has taken the window's end), so that the
  // deregistrations are not counted as workers gone during the fault.
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  // Deregister so the status views are clean for what follows.
  for (const id of ids) {
    await signedPost(request, `/${id}/deregister`, { reason: 'chaos scale test over' }).then(
      (r) => r.body?.cancel(),
      () => undefined,
    );
  }
  process.disconnect?.();
}

process.once('message', (message: SimulationRequest) => {
  simulate(message).catch((error: unknown) => {
    process.stderr.write(`simulated workers: ${String(error)}\n`);
    process.exitCode = 1;
    process.disconnect?.();
  });
});
