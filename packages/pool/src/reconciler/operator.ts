/**
 * The operator's commands (`PoolOperator`) and `cancelAll`. Each command changes the
 * deployment catalog or the planner's state (`planJobDrain`, `resumeDeployment`); what it
 * implies, which jobs to cancel and when, is planned by the ticks.
 */
import { classifyProviderError, type ObservedJob } from '../provider.js';
import { PoolError } from '../errors.js';
import { isLiveState, planJobDrain, resumeDeployment } from '../reconcile/index.js';
import type { Reconciler, TickResult } from '../reconciler.js';
import type { PoolOperator } from '../roles.js';
import { jobNames, record, servedDeployment, type ReconcilerContext } from './context.js';

/** The reason an operator's drain gives (events, worker and job status). */
const OPERATOR_DRAIN = 'drained by an operator';

/** What the commands need of the loop. */
export interface OperatorLoop {
  /** A tick that plans after this moment: the one in progress (if any), then a new one. */
  freshTick(): Promise<TickResult[]>;
  /** Ask for an early tick when a drained job is due for its cancel. */
  askForDueJobDrains(at: number): void;
}

/** The operator's commands on the reconciler of `ctx`. */
export function createOperator(
  ctx: ReconcilerContext,
  loop: OperatorLoop,
): PoolOperator & Pick<Reconciler, 'cancelAll'> {
  const { registry, provider } = ctx;
  return {
    async setMaxNodes(deployment, maxNodes) {
      const config = servedDeployment(ctx, deployment);
      if (!Number.isInteger(maxNodes) || maxNodes < 0) {
        throw new PoolError(
          'invalid_request',
          `maxNodes must be an integer >= 0, got ${String(maxNodes)}`,
          { param: 'maxNodes' },
        );
      }
      const previousMaxNodes = config.maxNodes;
      registry.addDeployment({ ...config, maxNodes });
      // A tick in progress may have planned with the old maximum: its cancels count too.
      const cancelled = new Set<string>();
      for (const tick of await loop.freshTick()) {
        for (const action of tick.actions) {
          if (action.type !== 'cancel') continue;
          for (const job of action.jobs) {
            if (job.deployment === deployment && tick.cancelled.includes(job.jobId)) {
              cancelled.add(job.jobId);
            }
          }
        }
      }
      return { deployment, previousMaxNodes, maxNodes, cancelled: [...cancelled] };
    },

    drainWorker(workerId) {
      const worker = registry.worker(workerId);
      if (worker === undefined || worker.state === 'gone') {
        throw new PoolError('unknown_worker', `worker ${workerId} is not registered`, {
          workerId,
          param: 'workerId',
        });
      }
      registry.drainWorker(workerId, OPERATOR_DRAIN);
      return { drained: [workerId] };
    },

    drainJob(jobId) {
      const job = registry.job(jobId);
      if (job === undefined) {
        throw new PoolError('unknown_job', `job ${jobId} has no registered worker here`, {
          jobId,
          param: 'jobId',
        });
      }
      const at = ctx.now();
      const plan = planJobDrain(ctx.state, {
        jobId,
        deployment: job.deployment,
        reason: OPERATOR_DRAIN,
        now: at,
      });
      ctx.state = plan.state;
      for (const action of plan.actions) record(ctx, action);
      loop.askForDueJobDrains(at);
      return { drained: job.workerIds, jobId };
    },

    resume(deployment) {
      servedDeployment(ctx, deployment);
      ctx.state = resumeDeployment(ctx.state, deployment);
    },

    async cancelAll() {
      let jobs: ObservedJob[];
      try {
        jobs = await provider.list({ names: jobNames(ctx) });
      } catch (error) {
        throw new PoolError(
          'closed',
          `cannot list jobs to cancel them: ${classifyProviderError(error).message}`,
          {
            cause: error,
          },
        );
      }
      const ids = jobs.filter((j) => isLiveState(j.state)).map((j) => j.id);
      if (ids.length > 0) await provider.cancel(ids);
      return ids;
    },
  };
}
