/**
 * Demand-aware scaling: how many node jobs a deployment should hold, between its `minNodes`
 * and `maxNodes`, given its recent load. One pure function, {@link decideScale}, owns the
 * decision; the reconciler's fill phase samples the load every tick (`loadSample`), keeps
 * the state and acts on the target (submits up to it, drains down to it).
 *
 * The rule, in full:
 * 1. A tick's load is the deployment's requests in flight (per worker the larger of what
 *    the proxies count and what its engine reports running + waiting) plus the requests
 *    waiting in the proxies' queues for a worker; its KV-cache use is the mean over its
 *    ready workers. Both are averaged over the last `windowMs`.
 * 2. The nodes that load needs: `ceil(load / (targetInFlight × workers per node))`, or more
 *    when the mean KV-cache use is over `targetKvCacheUsage`
 *    (`ceil(ready nodes × kv / targetKvCacheUsage)`); at least 1 when anything is in flight
 *    or waiting; clamped to [minNodes, maxNodes].
 * 3. Up: the target rises when the need has stayed above it for `upDelayMs`, to the least
 *    need seen over that time (a burst shorter than the delay changes nothing). Down: it
 *    falls when the need has stayed below it for `downDelayMs`, to the most need seen over
 *    that time (so one quiet minute does not undo what the busy hour needs).
 * 4. From zero: with no node held and a request waiting, the target becomes 1 at once —
 *    a client is waiting and nothing can serve it (`scale from zero`).
 *
 * Defaults sit within what comparable systems use: Ray Serve waits 30 s up / 600 s down,
 * SkyServe 300 s / 1200 s, GWDG's SAIA averages 60 s. A model load takes minutes, so one
 * minute up is cheap in comparison; ten minutes down keeps a node through a lull.
 */
import { PoolError } from './errors.js';

/** How a deployment follows its load (`DeploymentConfig.scaling`). */
export interface ScalingPolicy {
  /** Requests in flight (and waiting) per engine instance the deployment aims at. */
  targetInFlight: number;
  /** Mean KV-cache use of the ready instances above which a node is added, in (0, 1]. */
  targetKvCacheUsage: number;
  /** Load is averaged over this window (ms). */
  windowMs: number;
  /** The need must stay above the target this long before it rises (ms). */
  upDelayMs: number;
  /** The need must stay below the target this long before it falls (ms). */
  downDelayMs: number;
}

/** The documented defaults (see the module's comment). */
export const DEFAULT_SCALING: ScalingPolicy = {
  targetInFlight: 8,
  targetKvCacheUsage: 0.9,
  windowMs: 30_000,
  upDelayMs: 60_000,
  downDelayMs: 600_000,
};

/** The policy with the defaults filled in. */
export function scalingPolicy(partial: Partial<ScalingPolicy> | undefined): ScalingPolicy {
  return { ...DEFAULT_SCALING, ...partial };
}

/** Throws through `fail` naming the first invalid field of a scaling policy. */
export function validateScaling(
  scaling: Partial<ScalingPolicy>,
  fail: (param: string, message: string) => never = (param, message) => {
    throw new PoolError('invalid_config', `${param} ${message}`, { param });
  },
): void {
  const positive = (key: keyof ScalingPolicy, max = Number.POSITIVE_INFINITY) => {
    const value = scaling[key];
    if (value === undefined) return;
    if (typeof value !== 'number' || !(value > 0) || value > max) {
      fail(
        `scaling.${key}`,
        `expected a number > 0${max === Number.POSITIVE_INFINITY ? '' : ` and <= ${max}`}, got ${String(value)}`,
      );
    }
  };
  const nonNegative = (key: keyof ScalingPolicy) => {
    const value = scaling[key];
    if (value === undefined) return;
    if (typeof value !== 'number' || !(value >= 0) || !Number.isFinite(value)) {
      fail(`scaling.${key}`, `expected a number of ms >= 0, got ${String(value)}`);
    }
  };
  positive('targetInFlight');
  positive('targetKvCacheUsage', 1);
  nonNegative('windowMs');
  nonNegative('upDelayMs');
  nonNegative('downDelayMs');
}

/** One tick's load of a deployment (see rule 1). */
export interface LoadSample {
  at: number;
  /** Requests in flight plus requests waiting in the proxies for a worker. */
  load: number;
  /** Mean KV-cache use of the ready instances, when any reports it. */
  kvCacheUsage?: number;
  /** Requests waiting in the proxies (part of `load`). */
  queued: number;
}

/** What the decision remembers between ticks (kept in the reconciler's state). */
export interface ScaleState {
  /** Node jobs the deployment should hold now. */
  target: number;
  /** Samples within the window, oldest first. */
  samples: LoadSample[];
  /** Since when the need has been above the target, and the least need seen since. */
  upSince?: number;
  upNeed?: number;
  /** Since when the need has been below the target, and the most need seen since. */
  downSince?: number;
  downNeed?: number;
  /** When the target last changed. */
  changedAt?: number;
  /** The last decision's mean load, KV-cache use and need (for status views). */
  load?: number;
  kvCacheUsage?: number;
  need?: number;
}

/** The inputs of one decision (all plain data). */
export interface ScaleInput {
  now: number;
  minNodes: number;
  maxNodes: number;
  /** Engine instances per node job. */
  workersPerNode: number;
  /** Nodes with a ready worker now (weighs the KV-cache rule). */
  readyNodes: number;
  policy: ScalingPolicy;
  /** The previous state (undefined on the first tick: the target starts at `initialTarget`). */
  state: ScaleState | undefined;
  /** The first tick's target: the jobs held then (adopted after a restart), clamped. */
  initialTarget: number;
  sample: LoadSample;
}

/** One decision: the next state, and what changed, if anything. */
export interface ScaleDecision {
  state: ScaleState;
  /** The need this tick (rule 2). */
  need: number;
  /** Mean load and KV-cache use over the window. */
  load: number;
  kvCacheUsage?: number;
  /** Set when the target changed: from, to and why. */
  change?: { from: number; to: number; why: string };
}

const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));

/** Mean of the samples' loads and KV-cache uses (time-weighted: each until the next). */
function windowMean(samples: readonly LoadSample[], now: number) {
  if (samples.length === 1) return { load: samples[0]!.load, kv: samples[0]!.kvCacheUsage };
  let load = 0;
  let kv = 0;
  let kvWeight = 0;
  let total = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    const until = i + 1 < samples.length ? samples[i + 1]!.at : now;
    // The newest sample counts at least a millisecond, so a window of one tick is itself.
    const weight = Math.max(until - s.at, i + 1 === samples.length ? 1 : 0);
    load += s.load * weight;
    total += weight;
    if (s.kvCacheUsage !== undefined) {
      kv += s.kvCacheUsage * weight;
      kvWeight += weight;
    }
  }
  return { load: total > 0 ? load / total : 0, kv: kvWeight > 0 ? kv / kvWeight : undefined };
}

/**
 * Decide a deployment's target node count (pure). See the module comment for the rule.
 * @example
 * const d = decideScale({ now, minNodes: 0, maxNodes: 4, workersPerNode: 2, readyNodes: 1,
 *   policy: DEFAULT_SCALING, state, initialTarget: 1, sample: { at: now, load: 40, queued: 0 } });
 * d.change; // { from: 1, to: 3, why: 'load 40.0 over 60 s above 16 per node (target 8 in flight × 2 instances)' } once the delay has passed
 */
export function decideScale(input: ScaleInput): ScaleDecision {
  const { now, minNodes, maxNodes, policy, sample } = input;
  const previous = input.state;
  const state: ScaleState = previous
    ? { ...previous, samples: [...previous.samples] }
    : { target: clamp(input.initialTarget, minNodes, maxNodes), samples: [] };
  // Bounds may have moved (an operator's new maxNodes): the target follows them at once.
  state.target = clamp(state.target, minNodes, maxNodes);
  state.samples.push(sample);
  while (state.samples.length > 1 && state.samples[0]!.at < now - policy.windowMs) {
    state.samples.shift();
  }
  const mean = windowMean(state.samples, now);
  const perNode = policy.targetInFlight * Math.max(1, input.workersPerNode);
  let need = Math.ceil(mean.load / perNode - 1e-9);
  if (mean.kv !== undefined && input.readyNodes > 0 && mean.kv > policy.targetKvCacheUsage) {
    need = Math.max(need, Math.ceil((input.readyNodes * mean.kv) / policy.targetKvCacheUsage));
  }
  const busy = sample.load > 0 || sample.queued > 0;
  if (busy) need = Math.max(need, 1);
  need = clamp(need, minNodes, maxNodes);

  const decision: ScaleDecision = { state, need, load: mean.load };
  state.need = need;
  state.load = mean.load;
  delete state.kvCacheUsage;
  if (mean.kv !== undefined) decision.kvCacheUsage = state.kvCacheUsage = mean.kv;
  const set = (to: number, why: string) => {
    decision.change = { from: state.target, to, why };
    state.target = to;
    state.changedAt = now;
    delete state.upSince;
    delete state.upNeed;
    delete state.downSince;
    delete state.downNeed;
  };
  const describe = (span: number) =>
    `load ${mean.load.toFixed(1)} (window ${Math.round(policy.windowMs / 1000)} s)` +
    (mean.kv === undefined ? '' : `, KV cache ${(mean.kv * 100).toFixed(0)} %`) +
    ` for ${Math.round(span / 1000)} s; target ${policy.targetInFlight} in flight × ${input.workersPerNode} per node`;

  if (state.target === 0 && sample.queued > 0) {
    set(need, `${sample.queued} request(s) waiting with no node: scale from zero`);
    return decision;
  }
  if (need > state.target) {
    delete state.downSince;
    delete state.downNeed;
    state.upSince ??= now;
    state.upNeed = Math.min(state.upNeed ?? need, need);
    if (now - state.upSince >= policy.upDelayMs) set(state.upNeed, describe(now - state.upSince));
  } else if (need < state.target) {
    delete state.upSince;
    delete state.upNeed;
    state.downSince ??= now;
    state.downNeed = Math.max(state.downNeed ?? need, need);
    if (now - state.downSince >= policy.downDelayMs) {
      set(state.downNeed, describe(now - state.downSince));
    }
  } else {
    delete state.upSince;
    delete state.upNeed;
    delete state.downSince;
    delete state.downNeed;
  }
  return decision;
}
