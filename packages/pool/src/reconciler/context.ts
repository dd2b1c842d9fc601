/**
 * What the reconciler's parts share: its resolved options, the mutable loop state (the
 * planner's remembered state above all), and the small effects every part uses: applying a
 * planned ledger change, recording and reporting a provider failure.
 */
import { classifyProviderError, type NodeProvider } from '../provider.js';
import { jobNameFor, type DeploymentConfig } from '../deployment.js';
import { PoolError } from '../errors.js';
import {
  DEFAULT_RECONCILE_OPTIONS,
  initialReconcilerState,
  type ReconcileAction,
  type ReconcileOptions,
  type ReconcilerState,
} from '../reconcile/index.js';
import type { ReconcilerOptions, ReconcilerRegistry } from '../reconciler.js';
import type { DeploymentStatus } from './status.js';

const ERRORS_KEPT = 10;

/** The reconciler's options resolved, and its state between ticks. */
export interface ReconcilerContext {
  readonly options: ReconcilerOptions;
  readonly registry: ReconcilerRegistry;
  readonly provider: NodeProvider;
  readonly schedulerId: string;
  readonly now: () => number;
  readonly random: () => number;
  /** The planner's options: its defaults overridden by the reconciler's options. */
  readonly planOptions: ReconcileOptions;
  /** The planner's remembered state: each plan and each settled outcome replaces it. */
  state: ReconcilerState;
  /** Ticking (between `start` and `stop`). */
  running: boolean;
  /** Stopped: submissions still planned are abandoned. */
  stopped: boolean;
  lastTickAt: number | undefined;
  lastListError: string | undefined;
  /** The most recent provider errors of each deployment, oldest first. */
  readonly errors: Map<string, DeploymentStatus['lastErrors']>;
}

/** Resolve the options: defaults, the planner's options, the initial state. */
export function createContext(options: ReconcilerOptions): ReconcilerContext {
  const { registry, provider, schedulerId } = options;
  const planOptions: ReconcileOptions = { ...DEFAULT_RECONCILE_OPTIONS, schedulerId };
  for (const key of Object.keys(
    DEFAULT_RECONCILE_OPTIONS,
  ) as (keyof typeof DEFAULT_RECONCILE_OPTIONS)[]) {
    const value = options[key];
    if (value !== undefined) Object.assign(planOptions, { [key]: value });
  }
  return {
    options,
    registry,
    provider,
    schedulerId,
    now: options.now ?? Date.now,
    random: options.random ?? Math.random,
    planOptions,
    state: initialReconcilerState(),
    running: false,
    stopped: false,
    lastTickAt: undefined,
    lastListError: undefined,
    errors: new Map(),
  };
}

/** Keep a provider failure for the deployment's status. */
export function noteError(
  ctx: ReconcilerContext,
  deployment: string,
  action: string,
  error: unknown,
): void {
  const list = ctx.errors.get(deployment) ?? [];
  list.push({ at: ctx.now(), action, message: classifyProviderError(error).message });
  if (list.length > ERRORS_KEPT) list.shift();
  ctx.errors.set(deployment, list);
}

/** Tell `onError` about a provider failure. */
export function report(
  ctx: ReconcilerContext,
  error: unknown,
  context: { action: 'list' | 'submit' | 'cancel' | 'release'; deployment?: string },
): void {
  try {
    ctx.options.onError?.(error, context);
  } catch {
    // Logging must not break the loop.
  }
}

/** Apply one planned change to the ledger or the event log (provider calls are not here). */
export function record(ctx: ReconcilerContext, action: ReconcileAction): void {
  const { registry } = ctx;
  switch (action.type) {
    case 'note-incarnation':
      registry.noteIncarnation(action.jobId, action.deployment, action.restartCount);
      break;
    case 'end-job':
      registry.endJob(action.jobId, action.reason, action.restartCount);
      break;
    case 'drain-job':
      registry.drainJob(action.jobId, action.reason);
      break;
    case 'worker-gone':
      registry.markGone(action.workerId, action.reason);
      break;
    case 'forget-job':
      registry.forgetJob(action.jobId);
      break;
    case 'event':
      registry.emit(action.event);
      break;
    default:
      break;
  }
}

/** The job names of this scheduler's deployments, the filter of every list. */
export function jobNames(ctx: ReconcilerContext): string[] {
  return ctx.registry.deploymentConfigs().map((d) => jobNameFor(ctx.schedulerId, d.name));
}

/** A served deployment's config; throws `PoolError` `unknown_deployment`. */
export function servedDeployment(ctx: ReconcilerContext, name: string): DeploymentConfig {
  const config = ctx.registry.deploymentConfig(name);
  if (config === undefined) {
    throw new PoolError('unknown_deployment', `deployment ${name} is not served here`, {
      param: 'deployment',
    });
  }
  return config;
}
