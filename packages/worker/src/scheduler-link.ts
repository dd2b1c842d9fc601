/**
 * The worker's link to the scheduler: register each instance, heartbeat it, send the drain,
 * hand-over and deregister notices, obey fencing (409: exit) and forgetting (404: register again),
 * and follow the scheduler-URL file while the scheduler is unreachable. Only signed answers
 * are obeyed: one not signed with the worker key (a squatter on the scheduler's port) is
 * logged and counts as no answer, so it can neither fence the worker nor register it.
 */
import { createWorkerClient, readSchedulerUrl } from '@es/protocol';
import type { HeartbeatRequest, RegisterRequest, WorkerCallResult } from '@es/protocol';
import { sleep } from './clock.js';
import type { Clock } from './clock.js';
import type { EngineSupervisor } from './engine-supervisor.js';
import { WorkerError } from './errors.js';
import { reportedState } from './health.js';
import type { WorkerLogger } from './worker-options.js';

/** What the link needs to know of an instance: a part of its supervisor. */
export type LinkedInstance = Pick<
  EngineSupervisor,
  'index' | 'gpus' | 'logFile' | 'host' | 'port' | 'health' | 'load' | 'refreshLoad'
>;

/** Options of {@link createSchedulerLink}. */
export interface SchedulerLinkOptions {
  schedulerUrl: string;
  /** The scheduler-URL file, followed while the scheduler is unreachable. */
  schedulerUrlFile?: string | undefined;
  /** `deriveKeys(secret).workerKey`: signs every call, checks every answer (none without a secret). */
  workerKey?: string | undefined;
  /** Timeout of each call (drain and deregister notices use at most 2000 ms). */
  requestTimeoutMs: number;
  /** The fields of every registration that do not depend on the instance. */
  identity: Pick<
    RegisterRequest,
    'deployment' | 'jobId' | 'restartCount' | 'engine' | 'model' | 'node'
  >;
  clock: Clock;
  logger: WorkerLogger;
  /** A heartbeat was fenced (409) or a registration again refused: the worker must stop. */
  onFatal(error: unknown): void;
}

/** See {@link createSchedulerLink}. */
export interface SchedulerLink {
  /**
   * Registers `instance`, retrying while the scheduler is unreachable or answers 5xx.
   * Throws {@link FencedError} on 409 and `WorkerError` `registration_failed` on a refusal.
   */
  register(instance: LinkedInstance): Promise<void>;
  /** Heartbeats `instance` at the interval the scheduler gave, until `halt`. */
  startHeartbeats(instance: LinkedInstance): void;
  /** One heartbeat now (the instance's state changed). Never throws. */
  heartbeat(instance: LinkedInstance): Promise<void>;
  /** The worker id the scheduler gave instance `index`, once registered. */
  workerId(index: number): string | undefined;
  /** No more heartbeats or registration attempts (shutdown has begun). */
  halt(): void;
  /**
   * Heartbeats `workerIds` as `draining`, at the interval the scheduler gave, until the
   * returned function is called: a draining worker is alive for the whole drain grace, and
   * a scheduler whose heartbeat timeout is shorter than that grace must not take it for
   * dead (gone, its job cancelled: its hand-over would never come). Answers are ignored
   * (no registering again, no fencing: the worker is stopping anyway).
   */
  keepDraining(workerIds: readonly string[], reason: string): () => void;
  /** Drain notice for each of `workerIds`, in parallel; failures are logged. */
  drain(workerIds: readonly string[], reason: string): Promise<void>;
  /** Deregistration of each of `workerIds`, in parallel; failures are logged. */
  deregister(workerIds: readonly string[], reason: string): Promise<void>;
  /**
   * A `handover` message for `workerIds` (engines stop in `stopInMs`), each attempt waiting
   * at most 2000 ms; sent again while the scheduler is unreachable, for up to the longer of
   * `stopInMs` and `timeoutMs` (default 2000 ms). A failure is logged. Never throws.
   */
  handover(
    workerIds: readonly string[],
    reason: string,
    stopInMs: number,
    timeoutMs?: number,
  ): Promise<void>;
}

/** The scheduler answered 409: this incarnation must exit. The message is the scheduler's. */
export class FencedError extends Error {
  override readonly name = 'FencedError';
}

/** How often the URL file is read at most while the scheduler is unreachable. */
const URL_FILE_EVERY_MS = 1_000;

/** Creates the link; nothing is sent before `register`. */
export function createSchedulerLink(options: SchedulerLinkOptions): SchedulerLink {
  const { clock, logger: log, requestTimeoutMs: timeoutMs } = options;
  let schedulerUrl = options.schedulerUrl;
  const client = createWorkerClient({
    schedulerUrl: () => schedulerUrl,
    workerKey: options.workerKey,
    timeoutMs,
  });
  let urlFileReadAt = 0;
  let halted = false;
  const links = new Map<
    number,
    { workerId: string | undefined; heartbeatMs: number; timer: unknown }
  >();
  const linkOf = (index: number) => {
    let link = links.get(index);
    if (!link) {
      link = { workerId: undefined, heartbeatMs: 5000, timer: undefined };
      links.set(index, link);
    }
    return link;
  };

  /**
   * The scheduler is unreachable: follow the URL file if it names another address. The
   * registration loop reads it at most every URL_FILE_EVERY_MS; a failed heartbeat reads it
   * each time (`everyTime`: heartbeats are an interval apart already), so a scheduler that
   * came back elsewhere is found at the first heartbeat after it wrote the file. Callers at
   * the same moment share one read: none returns before the address it would find is set.
   */
  let urlFileRead: Promise<void> | undefined;
  const followUrlFile = (everyTime = false): Promise<void> => {
    const file = options.schedulerUrlFile;
    if (urlFileRead) return urlFileRead;
    if (file === undefined) return Promise.resolve();
    if (!everyTime && clock.now() - urlFileReadAt < URL_FILE_EVERY_MS) return Promise.resolve();
    urlFileReadAt = clock.now();
    urlFileRead = readAndFollow(file).finally(() => {
      urlFileRead = undefined;
    });
    return urlFileRead;
  };
  const readAndFollow = async (file: string): Promise<void> => {
    const read = await readSchedulerUrl(file);
    // Missing or empty: the scheduler is not serving (yet).
    if (read.kind === 'missing') return;
    if (read.kind === 'invalid') {
      log.warn(
        { file, url: read.text },
        `${file} names "${read.text}", not an http(s) URL; ignored`,
      );
      return;
    }
    const { url } = read;
    if (url === schedulerUrl) return;
    log.warn(
      { from: schedulerUrl, to: url, file },
      `the scheduler is unreachable at ${schedulerUrl} and ${file} names ${url}: following it`,
    );
    schedulerUrl = url;
  };

  const register = async (instance: LinkedInstance): Promise<void> => {
    const { identity } = options;
    const body: RegisterRequest = {
      deployment: identity.deployment,
      jobId: identity.jobId,
      restartCount: identity.restartCount,
      index: instance.index,
      host: instance.host,
      port: instance.port,
      gpus: [...instance.gpus],
      engine: identity.engine,
      model: identity.model,
      node: identity.node,
      state: reportedState(instance.health),
      logFile: instance.logFile,
      pid: process.pid,
    };
    const link = linkOf(instance.index);
    for (let attempt = 1; !halted; attempt++) {
      const result = await client.register(body);
      if (result.kind === 'unreachable') {
        log.warn(
          { attempt, error: result.message },
          result.unsigned
            ? 'ignored an unsigned answer (not from the scheduler); retrying registration'
            : 'scheduler unreachable; retrying registration',
        );
        await followUrlFile();
        await sleep(clock, Math.min(500 * attempt, 5000));
        continue;
      }
      if (result.kind === 'ok') {
        link.workerId = result.body.workerId;
        link.heartbeatMs = result.body.heartbeatIntervalMs;
        log.info({ workerId: result.body.workerId }, `instance ${instance.index} registered`);
        return;
      }
      if (result.kind === 'fenced') throw new FencedError(result.message);
      if (
        result.kind === 'unauthorized' &&
        (result.code === 'stale' || result.code === 'replayed')
      ) {
        // A clock behind the scheduler's (just restarted) or out of step: not fatal.
        log.warn(
          { attempt, code: result.code, error: result.message },
          'the scheduler refused the signature as not fresh; retrying registration',
        );
        await sleep(clock, Math.min(500 * attempt, 5000));
        continue;
      }
      const { status } = result;
      if (status === 401 || status === 403 || status === 400 || status === 422) {
        throw new WorkerError(
          'registration_failed',
          `The scheduler refused to register instance ${instance.index} (HTTP ${status}): ${result.message}` +
            (status === 401
              ? options.workerKey
                ? ' — the scheduler knows the secret but not this signature: does something between them change the path or body?'
                : ' — the worker has no --secret-file'
              : ''),
        );
      }
      log.warn({ status, attempt }, `registration answered ${status}; retrying`);
      await sleep(clock, Math.min(500 * attempt, 5000));
    }
  };

  const heartbeat = async (instance: LinkedInstance): Promise<void> => {
    const link = linkOf(instance.index);
    if (halted || link.workerId === undefined) return;
    // A slow or hung engine must not delay the heartbeat into the scheduler's timeout.
    if (instance.health.phase === 'ready') {
      await instance.refreshLoad(Math.min(2_000, Math.max(200, link.heartbeatMs / 2)));
    }
    // Stopped while reading the load: after a drain notice no heartbeat may say "ready".
    if (halted) return;
    const state = reportedState(instance.health);
    const reason = instance.health.reason;
    const body: HeartbeatRequest = {
      state,
      restartCount: options.identity.restartCount,
      ...(state === 'ready' && instance.load ? { load: instance.load } : {}),
      ...(reason ? { reason } : {}),
    };
    const sentTo = schedulerUrl;
    const result = await client.heartbeat(link.workerId, body);
    if (result.kind === 'unreachable') {
      log.warn(
        { error: result.message },
        result.unsigned
          ? 'ignored an unsigned heartbeat answer (not from the scheduler)'
          : 'heartbeat failed',
      );
      await followUrlFile(true);
      // The scheduler is at another address now (this instance or another one read the URL
      // file): tell it at once rather than one interval later, so a restarted scheduler
      // re-adopts this worker within one heartbeat interval of serving.
      if (schedulerUrl !== sentTo && !halted) await heartbeat(instance);
      return;
    }
    if (result.kind === 'unauthorized') {
      log.warn({ code: result.code, error: result.message }, 'heartbeat refused; next one retries');
      return;
    }
    try {
      if (result.kind === 'fenced') throw new FencedError(result.message);
      if (result.kind === 'unknown' && !halted) {
        log.warn({ workerId: link.workerId }, 'scheduler forgot this instance; registering again');
        await register(instance);
      }
    } catch (error) {
      // Fenced, or registering again was fenced or refused: the worker must stop.
      options.onFatal(error);
    }
  };

  const startHeartbeats = (instance: LinkedInstance) => {
    const link = linkOf(instance.index);
    link.timer = clock.setTimeout(() => {
      link.timer = undefined;
      if (halted) return;
      void heartbeat(instance).then(() => {
        if (!halted) startHeartbeats(instance);
      });
    }, link.heartbeatMs);
  };

  /** Sends one notice per worker id in parallel; only an unreachable scheduler is logged. */
  const notify = async (
    workerIds: readonly string[],
    send: (workerId: string) => Promise<WorkerCallResult<unknown>>,
    failure: string,
  ) => {
    await Promise.all(
      workerIds.map(async (workerId) => {
        const result = await send(workerId);
        if (result.kind === 'unreachable') log.warn({ error: result.message }, failure);
      }),
    );
  };
  const notice = { timeoutMs: Math.min(timeoutMs, 2000) };

  return {
    register,
    startHeartbeats,
    heartbeat,
    workerId: (index) => links.get(index)?.workerId,
    halt() {
      halted = true;
      for (const link of links.values()) clock.clearTimeout(link.timer);
    },
    keepDraining(workerIds, reason) {
      const intervalMs = Math.min(5000, ...[...links.values()].map((link) => link.heartbeatMs));
      const body: HeartbeatRequest = {
        state: 'draining',
        restartCount: options.identity.restartCount,
        reason,
      };
      let timer: unknown;
      let stopped = false;
      const beat = () => {
        timer = clock.setTimeout(() => {
          void notify(
            workerIds,
            (id) => client.heartbeat(id, body, notice),
            'draining heartbeat failed',
          ).then(() => {
            if (!stopped) beat();
          });
        }, intervalMs);
      };
      if (workerIds.length > 0) beat();
      return () => {
        stopped = true;
        clock.clearTimeout(timer);
      };
    },
    drain: (workerIds, reason) =>
      notify(workerIds, (id) => client.drain(id, { reason }, notice), 'drain notice failed'),
    deregister: (workerIds, reason) =>
      notify(workerIds, (id) => client.deregister(id, { reason }, notice), 'deregister failed'),
    async handover(workerIds, reason, stopInMs, handoverTimeoutMs = notice.timeoutMs) {
      if (workerIds.length === 0) return;
      // Sent again (a new nonce each time; the scheduler announces each worker once) while
      // the scheduler is unreachable and the engines still run: one lost or late answer on a
      // busy login node must not cost the generations their hand-over.
      const start = clock.now();
      const until = start + Math.max(handoverTimeoutMs, stopInMs);
      for (let attempt = 1; ; attempt += 1) {
        const left = until - clock.now();
        const result = await client.handover(
          {
            workerIds: [...workerIds],
            reason,
            stopInMs: Math.max(0, Math.round(stopInMs - (clock.now() - start))),
          },
          { timeoutMs: Math.max(250, Math.min(notice.timeoutMs, left)) },
        );
        if (result.kind === 'ok') {
          log.info(
            { workerIds: result.body.handedOver, stopInMs, attempt },
            'generations handed over',
          );
          return;
        }
        const again = result.kind === 'unreachable' && until - clock.now() > 250;
        log.warn(
          { workerIds, attempt, error: result.message },
          again ? 'hand-over failed; sending it again' : 'hand-over failed',
        );
        if (!again) return;
        await sleep(clock, 250);
      }
    },
  };
}
