/**
 * Simulated workers for the chaos suite's scale fault, run as their own process (forked by
 * `scaleScenario`): N real HTTP registrations, then one heartbeat a second each, spread over
 * the second, then deregistration. In their own process, as independent nodes are, so that
 * neither the load generator nor these heartbeats measure the other's event-loop delay.
 *
 * Protocol (IPC): the parent sends one {@link SimulationRequest}; this process answers
 * `{ type: 'heartbeating', ids, refused }` when the heartbeats start, then
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
    if (response.ok) ids.push(((await response.json()) as { workerId: string }).workerId);
    else {
      refused++;
      await response.body?.cancel();
    }
  }
  process.send?.({ type: 'heartbeating', ids, refused });
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let sent = 0;
  let answered = 0;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let stopped = false;
  const beat = async (id: string) => {
    sent++;
    const started = performance.now();
    try {
      const response = await signedPost(
        request,
        `/${id}/heartbeat`,
        { state: 'loading', restartCount: 0 },
        AbortSignal.timeout(5_000),
      );
      await response.body?.cancel();
      latencies.push(performance.now() - started);
      if (response.status === 200) answered++;
      else failures[response.status] = (failures[response.status] ?? 0) + 1;
    } catch {
      failures[0] = (failures[0] ?? 0) + 1;
    }
  };
  const loops = ids.map(async (id, i) => {
    // Spread the workers over the second, as independent nodes would be.
    await sleep((i / ids.length) * 1_000);
    while (!stopped) {
      const next = Date.now() + 1_000;
      await beat(id);
      await sleep(Math.max(0, next - Date.now()));
    }
  });
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
