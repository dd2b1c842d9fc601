/**
 * The worker's link to the scheduler: register each instance, heartbeat it, send the drain
 * and deregister notices, obey fencing (409: exit) and forgetting (404: register again),
 * and follow the scheduler-URL file while the scheduler is unreachable.
 */
import { readFile } from 'node:fs/promises';
import ky from 'ky';
import type { KyInstance } from 'ky';
import { WORKER_API_PREFIX } from '@es/pool';
import type { HeartbeatRequest, RegisterRequest, RegisterResponse } from '@es/pool';
import { sleep } from './clock.js';
import type { Clock } from './clock.js';
import type { EngineSupervisor } from './engine-supervisor.js';
import { WorkerError } from './errors.js';
import { reportedState } from './health.js';
import { isHttpUrl } from './host.js';
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
  /** `Authorization: Bearer` token of every call (none without a secret). */
  workerToken?: string | undefined;
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
   * Throws {@link FencedError} on 409 and `WorkerError` `REGISTRATION_FAILED` on a refusal.
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
  /** Drain notice for each of `workerIds`, in parallel; failures are logged. */
  drain(workerIds: readonly string[], reason: string): Promise<void>;
  /** Deregistration of each of `workerIds`, in parallel; failures are logged. */
  deregister(workerIds: readonly string[], reason: string): Promise<void>;
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
  const apiFor = (url: string): KyInstance =>
    ky.create({
      prefixUrl: new URL(WORKER_API_PREFIX.slice(1), withSlash(url)).href,
      retry: 0,
      throwHttpErrors: false,
      timeout: timeoutMs,
      headers: options.workerToken ? { authorization: `Bearer ${options.workerToken}` } : {},
    });
  let schedulerUrl = options.schedulerUrl;
  let api = apiFor(schedulerUrl);
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

  /** The scheduler is unreachable: follow the URL file if it names another address. */
  const followUrlFile = async (): Promise<void> => {
    const file = options.schedulerUrlFile;
    if (file === undefined || clock.now() - urlFileReadAt < URL_FILE_EVERY_MS) return;
    urlFileReadAt = clock.now();
    let url: string;
    try {
      url = (await readFile(file, 'utf8')).split('\n')[0]?.trim() ?? '';
    } catch {
      return; // Not written (yet): the scheduler is not serving.
    }
    if (url === '' || url === schedulerUrl) return;
    if (!isHttpUrl(url)) {
      log.warn({ file, url }, `${file} names "${url}", not an http(s) URL; ignored`);
      return;
    }
    log.warn(
      { from: schedulerUrl, to: url, file },
      `the scheduler is unreachable at ${schedulerUrl} and ${file} names ${url}: following it`,
    );
    schedulerUrl = url;
    api = apiFor(url);
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
      let status: number;
      let text: string;
      try {
        const response = await api.post('register', { json: body });
        status = response.status;
        text = await response.text();
      } catch (error) {
        log.warn({ attempt, error: String(error) }, 'scheduler unreachable; retrying registration');
        await followUrlFile();
        await sleep(clock, Math.min(500 * attempt, 5000));
        continue;
      }
      if (status === 200) {
        const registered = JSON.parse(text) as RegisterResponse;
        link.workerId = registered.workerId;
        link.heartbeatMs = registered.heartbeatIntervalMs;
        log.info({ workerId: registered.workerId }, `instance ${instance.index} registered`);
        return;
      }
      if (status === 409) throw new FencedError(errorMessage(text));
      if (status === 401 || status === 403 || status === 400 || status === 422) {
        throw new WorkerError(
          'REGISTRATION_FAILED',
          `The scheduler refused to register instance ${instance.index} (HTTP ${status}): ${text}` +
            (status === 401 ? " — check that --secret-file is the scheduler's secret" : ''),
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
    try {
      const response = await api.post(`${encodeURIComponent(link.workerId)}/heartbeat`, {
        json: body,
      });
      const answer = response.status === 409 ? await response.text() : '';
      if (response.status !== 409) await response.body?.cancel();
      if (response.status === 404 && !halted) {
        log.warn({ workerId: link.workerId }, 'scheduler forgot this instance; registering again');
        await register(instance);
      } else if (response.status === 409) {
        throw new FencedError(errorMessage(answer));
      }
    } catch (error) {
      if (error instanceof FencedError || error instanceof WorkerError) {
        options.onFatal(error);
        return;
      }
      log.warn({ error: String(error) }, 'heartbeat failed');
      await followUrlFile();
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

  const notify =
    (route: 'drain' | 'deregister', failure: string) =>
    async (workerIds: readonly string[], reason: string) => {
      await Promise.all(
        workerIds.map((workerId) =>
          api
            .post(`${encodeURIComponent(workerId)}/${route}`, {
              json: { reason },
              timeout: Math.min(timeoutMs, 2000),
            })
            .then((response) => response.body?.cancel())
            .catch((error: unknown) => log.warn({ error: String(error) }, failure)),
        ),
      );
    };

  return {
    register,
    startHeartbeats,
    heartbeat,
    workerId: (index) => links.get(index)?.workerId,
    halt() {
      halted = true;
      for (const link of links.values()) clock.clearTimeout(link.timer);
    },
    drain: notify('drain', 'drain notice failed'),
    deregister: notify('deregister', 'deregister failed'),
  };
}

/** The `error.message` of an OpenAI-shaped error body, else the text itself (trimmed). */
function errorMessage(text: string): string {
  try {
    const message = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    if (typeof message === 'string' && message !== '') return message;
  } catch {
    // Not JSON: use the text.
  }
  return text.trim().slice(0, 500) || 'no reason given';
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}
