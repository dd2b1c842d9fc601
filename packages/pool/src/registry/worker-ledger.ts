/**
 * The worker protocol's side of the registry: registration (a new worker record, or a
 * re-registration that keeps the counters), heartbeat bookkeeping (last heard, engine load,
 * the state a worker reports), the worker's own drain and exit, and the hand-over of a
 * draining worker's generations.
 */
import { formatWorkerId } from '@es/protocol';
import { PoolError } from '../errors.js';
import type { PoolEventLog, WorkerLedger } from '../roles.js';
import type { WorkerState } from '../registry.js';
import type { Lifecycle } from './lifecycle.js';
import {
  baseUrlOf,
  fencedMessage,
  jobRecord,
  type RegistryStore,
  type WorkerRecord,
} from './records.js';
import type { Routing } from './routing.js';

/** What {@link createWorkerLedger} needs besides the registry's parts. */
export interface WorkerLedgerOptions {
  emit: PoolEventLog['emit'];
  /** Heartbeat interval told to workers at registration. */
  heartbeatIntervalMs: number;
  /** The key a worker's engine front requires (see `RegistryOptions.upstreamKey`). */
  upstreamKey: ((worker: { deployment: string; jobId: string }) => string | undefined) | undefined;
}

/** The worker ledger of a registry. */
export function createWorkerLedger(
  store: RegistryStore,
  routing: Routing,
  lifecycle: Lifecycle,
  options: WorkerLedgerOptions,
): WorkerLedger {
  const { now, workers } = store;
  const { emit, heartbeatIntervalMs } = options;
  const { setState, retire, getWorker } = lifecycle;

  const upstreamKeyOf = (deployment: string, jobId: string): { upstreamKey?: string } => {
    const key = options.upstreamKey?.({ deployment, jobId });
    return key === undefined ? {} : { upstreamKey: key };
  };

  return {
    register(request) {
      const deploymentWorkers = routing.deploymentWorkers(request.deployment);
      if (deploymentWorkers === undefined) {
        throw new PoolError(
          'unknown_deployment',
          `deployment ${request.deployment} is not served by this scheduler`,
          { param: 'deployment', jobId: request.jobId },
        );
      }
      const job = jobRecord(store, request.jobId, request.deployment);
      const fenced = fencedMessage(job, request.restartCount);
      if (fenced !== undefined) {
        throw new PoolError('fenced', fenced, { jobId: request.jobId, param: 'restartCount' });
      }
      lifecycle.advance(
        job,
        request.restartCount,
        `replaced by incarnation ${request.restartCount}`,
      );
      const id = formatWorkerId(request.jobId, request.restartCount, request.index);
      const at = now();
      const previous = workers.get(id);
      if (previous !== undefined) {
        // Re-registration (scheduler restart, or a 404 after a heartbeat timeout): keep the
        // counters but let the new address and state win.
        previous.state = 'gone';
        routing.republish(previous.deployment, 'registered again');
      }
      const state: WorkerState =
        request.state === 'ready'
          ? 'ready'
          : request.state === 'draining'
            ? 'draining'
            : request.state === 'failed'
              ? 'failed'
              : 'starting';
      const w: WorkerRecord = {
        id,
        deployment: request.deployment,
        jobId: request.jobId,
        restartCount: request.restartCount,
        index: request.index,
        host: request.host,
        port: request.port,
        node: request.node,
        gpus: [...request.gpus],
        engine: request.engine,
        model: request.model,
        state: 'starting',
        reason: undefined,
        registeredAt: at,
        lastHeartbeat: at,
        goneAt: undefined,
        requestsServed: previous?.requestsServed ?? 0,
        failures: 0,
        ejectedUntil: undefined,
        logFile: request.logFile,
        pid: request.pid,
        handedOverAt: undefined,
        dataPlaneInFlight: 0,
        routable: {
          id,
          deployment: request.deployment,
          baseUrl: baseUrlOf(request.host, request.port),
          ...upstreamKeyOf(request.deployment, request.jobId),
          // Requests still running on the previous record decrement that object, not this one.
          inFlight: 0,
        },
      };
      workers.set(id, w);
      job.workers.add(id);
      deploymentWorkers.add(id);
      job.registeredAt ??= at;
      emit({
        type: 'registered',
        deployment: w.deployment,
        jobId: w.jobId,
        workerId: id,
        reason: `${w.node} ${w.routable.baseUrl} gpus ${w.gpus.join(',')}`,
      });
      if (state !== 'starting') setState(w, state);
      return { workerId: id, heartbeatIntervalMs };
    },

    heartbeat(workerId, request) {
      const w = getWorker(workerId, request.restartCount);
      w.lastHeartbeat = now();
      if (request.load !== undefined) w.routable.load = request.load;
      if (w.ejectedUntil !== undefined && w.ejectedUntil <= w.lastHeartbeat)
        routing.republish(w.deployment);
      // Draining and failed are sticky: a worker that announced either is on its way out.
      if (w.state === 'draining' || w.state === 'failed') return;
      switch (request.state) {
        case 'ready':
          if (w.state === 'loading') delete w.reason;
          setState(w, 'ready');
          break;
        case 'loading':
          // Also a ready engine that stopped answering its liveness probes: out of routing.
          setState(w, 'loading', request.reason);
          break;
        case 'draining':
          setState(w, 'draining', request.reason ?? 'worker draining');
          break;
        case 'failed':
          setState(w, 'failed', request.reason ?? 'engine failed');
          break;
      }
    },

    drain(workerId, reason) {
      const w = getWorker(workerId);
      if (w.state === 'failed') return;
      setState(w, 'draining', reason);
    },

    deregister(workerId, reason) {
      const w = getWorker(workerId);
      retire(w, 'gone', reason);
    },

    handOver(workerIds, reason, stopInMs) {
      const known = workerIds.flatMap((id) => {
        const w = workers.get(id);
        return w === undefined ? [] : [w];
      });
      if (known.length === 0) {
        throw new PoolError(
          'unknown_worker',
          `none of the workers ${workerIds.join(', ')} is registered`,
          { workerId: workerIds[0] },
        );
      }
      const why = `${reason} (engines stop in ${Math.round(stopInMs)} ms)`;
      for (const w of known) {
        if (w.handedOverAt !== undefined) continue;
        w.handedOverAt = now();
        // Its drain notice may have been lost: out of routing first, as a drain.
        if (w.state === 'ready' || w.state === 'loading' || w.state === 'starting') {
          setState(w, 'draining', reason);
        }
        emit({
          type: 'hand-over',
          deployment: w.deployment,
          jobId: w.jobId,
          workerId: w.id,
          reason: why,
        });
        lifecycle.announceLost(w.id, `hand-over: ${why}`);
      }
      return known.map((w) => w.id);
    },
  };
}
