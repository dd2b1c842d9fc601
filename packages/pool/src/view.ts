import type { EngineKind, EngineLoad } from '@es/protocol';

/** Routing policies the proxy implements, the default first. */
export const ROUTING_POLICIES = ['least-outstanding', 'round-robin', 'prefix-affinity'] as const;

/** One of {@link ROUTING_POLICIES}. */
export type RoutingPolicy = (typeof ROUTING_POLICIES)[number];

/** The engine's chat output parsers, by the names its command line gives them. */
export interface ChatParsers {
  /** `--reasoning-parser` (e.g. `deepseek_r1`, `qwen3`). */
  reasoning?: string;
  /** `--tool-call-parser` (e.g. `hermes`). */
  tools?: string;
  /** A gpt-oss model: vLLM renders and parses its chat in Harmony (reasoning and tools). */
  harmony?: boolean;
}

/** What the proxy needs to know about a deployment. */
export interface DeploymentView {
  /** Unique deployment name. */
  name: string;
  /** Names clients may send as `model` (served model name first, then the model path). */
  modelNames: string[];
  /** Model path or hub id. */
  model: string;
  engine: EngineKind;
  routing: RoutingPolicy;
  /**
   * A key every engine of this deployment requires, for engines the pool does not start
   * (a worker's own `upstreamKey` wins).
   */
  upstreamApiKey?: string;
  /**
   * How the engine parses chat output into reasoning and tool calls (its reasoning and
   * tool-call parsers, or gpt-oss's Harmony format); absent when it does not. The proxy
   * continues a cut chat generation only when it can replay the parser on raw text.
   */
  chatParsers?: ChatParsers;
  /**
   * The deployment may have no node at all (`minNodes` 0): a request finding no worker waits
   * for one to be started and loaded (the proxy's cold-start wait), not the usual queue wait.
   */
  scalesFromZero?: boolean;
  /**
   * When a node of this deployment is expected to be ready (epoch ms), while none is: the
   * cluster's expected start of its pending job. A request whose cold-start wait runs out is
   * told to come back then (`Retry-After`). Absent when not known.
   */
  expectedReadyAt?: number;
}

/** A ready engine instance the proxy may send requests to. */
export interface RoutableWorker {
  id: string;
  deployment: string;
  /** `http://host:port` */
  baseUrl: string;
  /**
   * The key this worker's engine front requires (one per job, see the registry's
   * `upstreamKey`); when absent, the deployment's `upstreamApiKey`.
   */
  upstreamKey?: string;
  /** Latest engine-reported load (from heartbeats). */
  load?: EngineLoad;
  /**
   * Requests the proxy has in flight to this worker. The proxy increments it when it
   * sends and decrements it on every exit path; the status views read it.
   */
  inFlight: number;
}

/**
 * Outcome the proxy reports per upstream attempt, for passive ejection. `draining`: the
 * worker's engine front refused the request because the worker drains (`WORKER_DRAINING` of
 * `@es/protocol`); not a failure, but the worker leaves this process's routing at once.
 */
export type AttemptOutcome =
  'success' | 'connect-error' | 'upstream-5xx' | 'timeout' | 'mid-stream-failure' | 'draining';

/**
 * A worker entering or leaving the routable set of its deployment: the one place where
 * "may this worker receive new requests" changes, for every reason (ready, draining,
 * unready after failed liveness probes, passive ejection and its end, failed, gone,
 * re-registration).
 */
export interface RoutingChange {
  deployment: string;
  workerId: string;
  /** `true`: it entered the routable set; `false`: it left it. */
  routable: boolean;
  /** Why, e.g. `ready`, `draining: preempted`, `unready: ejected for 10000 ms ...`. */
  reason: string;
}

/**
 * The read model and feedback channel the proxy uses. Implemented by the registry in
 * this package; tests may build it by hand.
 */
export interface PoolView {
  /** All deployments served. */
  deployments(): readonly DeploymentView[];
  /** The deployment whose `modelNames` contains `model`, if any. */
  resolveModel(model: string): DeploymentView | undefined;
  /**
   * Workers that may receive new requests now: state `ready`, not draining, not
   * passively ejected. Must be cheap: the proxy calls it on every request.
   */
  routable(deployment: string): readonly RoutableWorker[];
  /**
   * Resolves when `deployment` has a routable worker, or with `false` when `signal`
   * aborts first. Used by the proxy's bounded wait queue.
   */
  waitForRoutable(deployment: string, signal: AbortSignal): Promise<boolean>;
  /** Report the outcome of one upstream attempt (passive ejection after repeated failures). */
  reportOutcome(workerId: string, outcome: AttemptOutcome): void;
  /**
   * Subscribe to workers that stop serving without finishing their requests: their engine
   * stopped answering (liveness), they failed, they are gone (heartbeat timeout, job ended),
   * or they are handed over. A draining worker's in-flight requests are let finish, so
   * leaving service while draining calls no listener, except the hand-over: a draining
   * worker whose engines are still busy a margin before they get SIGTERM (its drain grace
   * is nearly over: preemption, scancel, time limit, scale-down) is announced once with a
   * reason starting `hand-over` (`hand-over: SIGTERM (engines stop in 5000 ms)`), before
   * its engines stop. The proxy aborts its attempts on such a worker: continued or retried
   * elsewhere when it can, an error event otherwise. Optional; returns the unsubscribe
   * function.
   */
  onWorkerLost?(listener: (workerId: string, reason: string) => void): () => void;
  /**
   * Subscribe to every change of the routable sets. Listeners run synchronously, right
   * after the new set is published and before control returns to any other code, so a
   * listener that also records picks (the proxy's routing journal) sees changes and picks
   * in their true order. Optional; returns the unsubscribe function.
   */
  onRoutingChange?(listener: (change: RoutingChange) => void): () => void;
}
