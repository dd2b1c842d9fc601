/**
 * One reconcile tick, the side-effecting half around the pure planner (`../reconcile/`):
 * list this scheduler's jobs once through the provider, plan with `planReconcile`, apply
 * the ledger changes at once, then cancel in one batched call, release requeued jobs in
 * another, and submit. Each provider outcome goes back to the planner's state
 * (`settleCancel`, `settleRelease`, `settleSubmission`): the backoff after a failure is
 * planned there, not here. A replacement whose predecessor's cancel failed is not submitted
 * (the predecessor may still run: the cap holds); the next tick plans both again.
 */
import { WORKER_ENV } from '@es/protocol';
import {
  classifyProviderError,
  ProviderError,
  type NodeProvider,
  type NodeRequest,
  type ObservedJob,
} from '../provider.js';
import { jobNameFor } from '../deployment.js';
import {
  abandonSubmission,
  planReconcile,
  settleCancel,
  settleRelease,
  settleSubmission,
} from '../reconcile/index.js';
import type { TickResult } from '../reconciler.js';
import { jobNames, noteError, record, report, type ReconcilerContext } from './context.js';

/** Run one tick: list, plan, record, cancel, submit. */
export async function tick(ctx: ReconcilerContext): Promise<TickResult> {
  const { registry, provider, options, now, random, planOptions, schedulerId } = ctx;
  const result: TickResult = { listed: false, submitted: [], cancelled: [], actions: [] };
  const observedAt = now();
  let observed: ObservedJob[] | 'unknown';
  try {
    observed = await provider.list({ names: jobNames(ctx) });
    result.listed = true;
    ctx.lastListError = undefined;
  } catch (error) {
    observed = 'unknown';
    ctx.lastListError = classifyProviderError(error).message;
    report(ctx, error, { action: 'list' });
  }
  const deployments = registry.deploymentConfigs();
  // The plan judges heartbeat timeouts too: from every heartbeat received so far.
  options.receivePendingHeartbeats?.();
  const plan = planReconcile({
    now: now(),
    deployments,
    observed,
    observedAt,
    registry: registry.snapshot(),
    state: ctx.state,
    options: planOptions,
    jitter: random(),
    ...(options.queued === undefined ? {} : { queued: options.queued() }),
  });
  ctx.state = plan.state;
  result.actions = plan.actions;

  // Registry changes first: workers leave routing before any slow provider call (the
  // drains of the jobs about to be cancelled included).
  for (const action of plan.actions) record(ctx, action);

  const failedCancels = new Set<string>();
  for (const action of plan.actions) {
    if (action.type !== 'cancel') continue;
    const ids = action.jobs.map((j) => j.jobId);
    try {
      await provider.cancel(ids);
      result.cancelled.push(...ids);
      for (const job of action.jobs) {
        registry.emit({
          type: 'cancelled',
          deployment: job.deployment,
          jobId: job.jobId,
          reason: job.reason,
        });
      }
    } catch (error) {
      ctx.state = settleCancel(ctx.state, ids, false);
      for (const id of ids) failedCancels.add(id);
      for (const job of action.jobs) noteError(ctx, job.deployment, 'cancel', error);
      report(ctx, error, { action: 'cancel' });
    }
  }

  for (const action of plan.actions) {
    if (action.type !== 'release') continue;
    const ids = action.jobs.map((j) => j.jobId);
    try {
      await release(provider, ids);
      for (const job of action.jobs) {
        registry.emit({
          type: 'released',
          deployment: job.deployment,
          jobId: job.jobId,
          reason: 'requeue begin time lifted: it starts as soon as a node is free',
        });
      }
    } catch (error) {
      ctx.state = settleRelease(ctx.state, ids, classifyProviderError(error));
      for (const job of action.jobs) noteError(ctx, job.deployment, 'release', error);
      report(ctx, error, { action: 'release' });
    }
  }

  for (const action of plan.actions) {
    if (action.type !== 'submit') continue;
    const deployment = deployments.find((d) => d.name === action.deployment);
    // A failure earlier in this tick set a backoff: do not hammer the controller.
    if (
      deployment === undefined ||
      ctx.stopped ||
      ctx.state.permanent[action.deployment] !== undefined ||
      (ctx.state.backoff[action.deployment]?.until ?? 0) > now() ||
      (action.replaces !== undefined && failedCancels.has(action.replaces))
    ) {
      ctx.state = abandonSubmission(ctx.state, action.tag);
      continue;
    }
    const name = jobNameFor(schedulerId, deployment.name);
    try {
      const init = await options.buildNodeRequest(deployment, action.tag, name);
      const request: NodeRequest = {
        gpusPerNode: deployment.gpusPerNode,
        ...init,
        env: { [WORKER_ENV.deployment]: deployment.name, ...init.env },
        deployment: deployment.name,
        name,
        tag: action.tag,
      };
      const timeLimit = init.timeLimitMinutes ?? deployment.timeLimitMinutes;
      if (timeLimit !== undefined) request.timeLimitMinutes = timeLimit;
      const cluster = init.cluster ?? deployment.cluster;
      if (cluster !== undefined) request.cluster = cluster;
      const jobId = await provider.submit(request);
      ctx.state = settleSubmission(
        ctx.state,
        action.tag,
        { ok: true, jobId },
        now(),
        planOptions,
        random(),
      );
      result.submitted.push(jobId);
      registry.emit({
        type: 'submitted',
        deployment: deployment.name,
        jobId,
        reason: action.reason,
      });
      if (action.replaces !== undefined) {
        registry.emit({
          type: 'replaced',
          deployment: deployment.name,
          jobId: action.replaces,
          reason: `by job ${jobId} (${action.reason})`,
        });
      }
    } catch (error) {
      const failure = classifyProviderError(error);
      ctx.state = settleSubmission(
        ctx.state,
        action.tag,
        { ok: false, failure },
        now(),
        planOptions,
        random(),
      );
      noteError(ctx, deployment.name, 'submit', error);
      report(ctx, error, { action: 'submit', deployment: deployment.name });
      registry.emit({
        type: 'failed',
        deployment: deployment.name,
        reason: `submit failed (${failure.kind}${failure.ambiguous ? ', ambiguous' : ''}): ${failure.message}`,
      });
    }
  }
  publishExpectedReady(ctx);
  ctx.lastTickAt = observedAt;
  return result;
}

/**
 * For each deployment that scales from zero and has no ready worker, the earliest expected
 * start SLURM gives its pending jobs: the `Retry-After` of a request whose cold-start wait
 * runs out. Unknown (none pending, no estimate, or a worker ready): cleared.
 */
function publishExpectedReady(ctx: ReconcilerContext): void {
  const { registry, state } = ctx;
  for (const d of registry.deploymentConfigs()) {
    if (d.minNodes !== 0) continue;
    let at: number | undefined;
    const ready = registry.workers(d.name).some((w) => w.state === 'ready');
    if (!ready) {
      for (const job of Object.values(state.jobs)) {
        if (job.deployment !== d.name || job.state !== 'PENDING') continue;
        if (job.expectedStart === undefined || job.cancelRequestedAt !== undefined) continue;
        at = Math.min(at ?? Number.POSITIVE_INFINITY, job.expectedStart);
      }
    }
    registry.setDeploymentExpectedReady(d.name, at);
  }
}

/** `provider.release`, or a permanent refusal from a provider without one. */
async function release(provider: NodeProvider, ids: string[]): Promise<void> {
  if (provider.release === undefined) {
    throw new ProviderError(
      'release_unsupported',
      `the ${provider.kind} provider cannot release jobs from a begin time`,
      { kind: 'permanent' },
    );
  }
  await provider.release(ids);
}
