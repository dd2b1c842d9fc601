/**
 * A NodeProvider whose "nodes" are slots on this machine: each job runs its command as a
 * detached child in its own process group, with SLURM-like environment variables. It is
 * the embedded default that runs the whole system without SLURM (and, with the mock
 * engine, without GPUs).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { FailureKind, JobState, ListFilter, NodeProvider, ObservedJob } from '@es/pool';
import { signalGroup, terminateGroup } from '@es/proc';
import { LocalProviderError } from './errors.js';
import type { LocalProviderErrorCode } from './errors.js';
import { ENDED, finalState, jobEnv, observeJob } from './job.js';
import type { EndCause, LocalJob } from './job.js';
import { killJobProcesses, runsJob, spawnJob } from './job-processes.js';
import { readStateFile, writeStateFile } from './state-file.js';

/** Options of {@link createLocalProvider}. */
export interface LocalProviderOptions {
  /** Simulated nodes; each runs one job at a time (default 1). */
  nodes?: number;
  /** GPUs per simulated node; node i has GPU ids `0..gpusPerNode-1` (default 8). */
  gpusPerNode?: number;
  /**
   * Explicit GPU ids per node (overrides `nodes` and `gpusPerNode`), e.g. `[[0, 1], [2, 3]]`
   * to give two nodes two real GPUs each.
   */
  nodeGpus?: number[][];
  /** Node names are `<nodePrefix>-<i>` (default `local`). */
  nodePrefix?: string;
  /** Time between SIGTERM and SIGKILL on cancel, preemption and time limit (default 5 000 ms), like SLURM's KillWait. */
  killGraceMs?: number;
  /** How long ended jobs stay listable (default 300 000 ms), like SLURM's MinJobAge. */
  keepEndedMs?: number;
  /** Kill running jobs on `close()` unless it says otherwise (default true). */
  killOnClose?: boolean;
  /** Environment the job's `request.env` is layered on (default `process.env`). */
  baseEnv?: NodeJS.ProcessEnv;
  /** Id of the first job (default 1); ids are consecutive integers as strings. */
  firstJobId?: number;
  /**
   * A JSON file where the provider keeps its pending and running jobs. A new provider with
   * the same file adopts them (a restarted scheduler with `close({ kill: false })` before
   * finds its jobs again, as with SLURM). Without it, jobs live as long as the provider.
   */
  stateFile?: string;
  /** How often adopted jobs (not children of this process) are checked for exit (default 1 000 ms). */
  adoptedPollMs?: number;
  /** Clock in milliseconds since epoch (default `Date.now`); timers stay real. */
  now?: () => number;
}

/** One simulated node. */
export interface LocalNodeInfo {
  /** `local-<i>`, also the job's `SLURMD_NODENAME`. */
  name: string;
  gpus: number[];
  /** Job running on it, if any. */
  jobId?: string;
}

/** Options of {@link LocalProvider.close}. */
export interface LocalCloseOptions {
  /** Kill running jobs (SIGTERM, then SIGKILL after the grace); default `killOnClose`. */
  kill?: boolean;
}

/** The local provider: a {@link NodeProvider} plus node introspection, preemption and close. */
export interface LocalProvider extends NodeProvider {
  readonly kind: 'local';
  /** The simulated nodes and what runs on them. */
  nodes(): LocalNodeInfo[];
  /**
   * Preempt a running job as SLURM would without requeue: SIGTERM to its process group,
   * SIGKILL after the grace, final state PREEMPTED. Returns false for jobs not running.
   */
  preempt(jobId: string): boolean;
  /** Stop starting jobs; kill or leave the running ones; resolves once killed ones exited. */
  close(options?: LocalCloseOptions): Promise<void>;
}

function providerError(
  code: LocalProviderErrorCode,
  kind: FailureKind,
  message: string,
  param?: string,
): LocalProviderError {
  return new LocalProviderError(code, message, param === undefined ? { kind } : { kind, param });
}

/**
 * Create a provider that runs node jobs as process groups on this machine.
 * @example
 * const provider = createLocalProvider({ nodes: 2, gpusPerNode: 8 });
 * const id = await provider.submit({ deployment: 'm', name: 'es-demo-m', tag: 'es:demo:m:1',
 *   gpusPerNode: 8, command: ['node', 'worker.mjs'], env: {}, logDir: 'logs' });
 * console.log(await provider.list({ names: ['es-demo-m'] }));
 * await provider.close();
 */
export function createLocalProvider(options: LocalProviderOptions = {}): LocalProvider {
  const now = options.now ?? Date.now;
  const prefix = options.nodePrefix ?? 'local';
  const killGraceMs = options.killGraceMs ?? 5_000;
  const keepEndedMs = options.keepEndedMs ?? 300_000;
  const baseEnv = options.baseEnv ?? process.env;
  const nodeGpus =
    options.nodeGpus ??
    Array.from({ length: options.nodes ?? 1 }, () =>
      Array.from({ length: options.gpusPerNode ?? 8 }, (_, i) => i),
    );
  if (nodeGpus.length === 0) {
    throw providerError(
      'invalid_config',
      'permanent',
      'the local provider needs at least one node',
      'nodes',
    );
  }
  const maxGpus = Math.max(...nodeGpus.map((gpus) => gpus.length));
  const occupant: (LocalJob | undefined)[] = nodeGpus.map(() => undefined);
  const jobs = new Map<string, LocalJob>();
  const pending: LocalJob[] = [];
  let nextId = options.firstJobId ?? 1;
  let closed = false;
  let handedOver = false;

  function end(job: LocalJob, state: JobState, reason: string): void {
    if (ENDED.has(job.state)) return;
    job.state = state;
    job.reason = reason;
    job.endTime = now();
    for (const timer of job.timers) clearTimeout(timer);
    job.timers = [];
    job.termination?.cancel();
    if (job.node !== undefined && occupant[job.node] === job) occupant[job.node] = undefined;
    schedule();
    persist();
  }

  function persist(): void {
    if (options.stateFile === undefined || handedOver) return;
    writeStateFile(options.stateFile, nextId, jobs.values());
  }

  /** Watch a job this process did not spawn: no 'exit' event, so poll its process group. */
  function watchAdopted(job: LocalJob): void {
    const pgid = job.pgid as number;
    job.exited = new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (runsJob(pgid, job.key)) return;
        clearInterval(timer);
        killJobProcesses(job.key);
        const final = finalState(job, 0, null);
        end(job, final.state, final.endCauseKnown ? final.reason : 'ExitCodeUnknown');
        resolve();
      }, options.adoptedPollMs ?? 1_000);
      timer.unref();
    });
  }

  function adopt(file: string): void {
    const saved = readStateFile(file);
    nextId = Math.max(nextId, saved.nextId);
    for (const entry of saved.jobs) {
      const job: LocalJob = {
        id: entry.id,
        key: entry.key,
        request: entry.request,
        state: entry.state,
        reason: '',
        submitTime: entry.submitTime,
        timers: [],
      };
      jobs.set(job.id, job);
      if (entry.state === 'PENDING') {
        job.reason = 'Resources';
        pending.push(job);
        continue;
      }
      job.startTime = entry.startTime ?? entry.submitTime;
      if (entry.node !== undefined) job.node = entry.node;
      const live =
        entry.pgid !== undefined &&
        entry.node !== undefined &&
        occupant[entry.node] === undefined &&
        runsJob(entry.pgid, entry.key);
      if (!live) {
        // It ended while nobody watched: like SLURM after the fact, only the end is known.
        // (Set directly: end() would schedule pending jobs onto nodes not yet re-occupied.)
        job.state = 'COMPLETED';
        job.reason = 'ExitCodeUnknown';
        job.endTime = now();
        killJobProcesses(entry.key);
        continue;
      }
      job.pgid = entry.pgid;
      occupant[entry.node as number] = job;
      if (entry.state === 'COMPLETING') job.endCause = 'cancel';
      watchAdopted(job);
      armTimeLimit(job);
    }
  }

  function armTimeLimit(job: LocalJob): void {
    const limit = job.request.timeLimitMinutes;
    if (limit === undefined || job.startTime === undefined) return;
    const left = limit * 60_000 - (now() - job.startTime);
    const timer = setTimeout(() => terminate(job, 'timeout'), Math.max(0, left));
    timer.unref();
    job.timers.push(timer);
  }

  /** SIGTERM the job's group now, SIGKILL after the grace (SLURM's KillWait). */
  function terminate(job: LocalJob, cause: EndCause): void {
    if (job.endCause !== undefined) return;
    job.endCause = cause;
    job.state = 'COMPLETING';
    job.reason = '';
    persist();
    // No `exited`: like KillWait, the SIGKILL comes after the grace unless the job's end
    // (end()) cancels it first.
    job.termination = terminateGroup(job.pgid, {
      graceMs: killGraceMs,
      onKill: () => killJobProcesses(job.key),
    });
  }

  function start(job: LocalJob, node: number): void {
    // A node runs one job; a whole-node job (as on SLURM) gets every GPU of it.
    const all = nodeGpus[node] ?? [];
    const gpus = job.request.cluster?.wholeNodeGpus ? all : all.slice(0, job.request.gpusPerNode);
    const nodeName = `${prefix}-${node}`;
    occupant[node] = job;
    job.node = node;
    job.state = 'RUNNING';
    job.reason = '';
    job.startTime = now();
    try {
      const child = spawnJob(job.request, job.id, jobEnv(job, baseEnv, { nodeName, gpus }));
      job.child = child;
      job.pgid = child.pid;
      job.exited = new Promise<void>((resolve) => {
        child.once('error', (error) => {
          end(job, 'FAILED', `LaunchFailed: ${error.message}`);
          resolve();
        });
        child.once('exit', (code, signal) => {
          // The job's end kills what it left behind, as SLURM does with the job's cgroup.
          signalGroup(job.pgid, 'SIGKILL');
          killJobProcesses(job.key);
          const final = finalState(job, code, signal);
          end(job, final.state, final.reason);
          resolve();
        });
      });
    } catch (error) {
      end(job, 'FAILED', `LaunchFailed: ${(error as Error).message}`);
      return;
    }
    armTimeLimit(job);
    persist();
  }

  function schedule(): void {
    if (closed) return;
    while (pending.length > 0) {
      const job = pending[0] as LocalJob;
      const free = occupant.findIndex(
        (o, i) => o === undefined && (nodeGpus[i]?.length ?? 0) >= job.request.gpusPerNode,
      );
      if (free === -1) return;
      pending.shift();
      start(job, free);
    }
  }

  function prune(): void {
    const cutoff = now() - keepEndedMs;
    for (const [id, job] of jobs) {
      if (job.endTime !== undefined && job.endTime < cutoff) jobs.delete(id);
    }
  }

  if (options.stateFile !== undefined && existsSync(options.stateFile)) {
    adopt(options.stateFile);
    schedule();
    persist();
  }

  return {
    kind: 'local',

    async submit(request) {
      if (closed) throw providerError('closed', 'permanent', 'the local provider is closed');
      if (request.gpusPerNode > maxGpus) {
        throw providerError(
          'unsatisfiable',
          'permanent',
          `a job asks for ${request.gpusPerNode} GPUs but local nodes have at most ${maxGpus} ` +
            "(raise the local provider's gpusPerNode or lower the deployment's)",
          'gpusPerNode',
        );
      }
      if (request.command.length === 0) {
        throw providerError(
          'unsatisfiable',
          'permanent',
          'the node request has an empty command',
          'command',
        );
      }
      const job: LocalJob = {
        id: String(nextId++),
        key: randomUUID(),
        request,
        state: 'PENDING',
        reason: 'Resources',
        submitTime: now(),
        timers: [],
      };
      jobs.set(job.id, job);
      pending.push(job);
      schedule();
      persist();
      return job.id;
    },

    async list(filter: ListFilter) {
      prune();
      const names = new Set(filter.names);
      const out: ObservedJob[] = [];
      for (const job of jobs.values()) {
        if (names.has(job.request.name)) out.push(observeJob(job, prefix, now));
      }
      return out;
    },

    async cancel(ids) {
      for (const id of ids) {
        const job = jobs.get(id);
        if (job === undefined || ENDED.has(job.state)) continue;
        if (job.state === 'PENDING') {
          pending.splice(pending.indexOf(job), 1);
          end(job, 'CANCELLED', '');
        } else {
          terminate(job, 'cancel');
        }
      }
    },

    preempt(jobId) {
      const job = jobs.get(jobId);
      if (job === undefined || job.state !== 'RUNNING') return false;
      terminate(job, 'preempt');
      return true;
    },

    nodes() {
      return nodeGpus.map((gpus, i) => {
        const job = occupant[i];
        return { name: `${prefix}-${i}`, gpus: [...gpus], ...(job ? { jobId: job.id } : {}) };
      });
    },

    async close(closeOptions = {}) {
      closed = true;
      if (!(closeOptions.kill ?? options.killOnClose ?? true)) {
        // Left jobs stay in the state file (pending ones too) for the next provider to adopt;
        // what this process still hears about them must not overwrite that provider's view.
        persist();
        handedOver = true;
        return;
      }
      for (const job of pending.splice(0)) end(job, 'CANCELLED', 'provider closed');
      const running = [...jobs.values()].filter((job) => job.exited && !ENDED.has(job.state));
      for (const job of running) terminate(job, 'cancel');
      // Children and kill timers are unref'd: without a ref'd handle the process would
      // exit (code 0) in the middle of this await, before the SIGKILL fallback and before
      // the caller's next steps.
      const hold = setInterval(() => undefined, 1_000);
      try {
        await Promise.all(running.map((job) => job.exited));
      } finally {
        clearInterval(hold);
      }
    },
  };
}
