/**
 * The scheduler's log lines about the pool: every lifecycle event, every cut generation and
 * how it was continued, and the progress of jobs still on their way. Operators (and the
 * chaos harness) read these lines; their wording is part of the behaviour.
 */
import type { Logger } from 'pino';
import type { AdminApi } from '@es/admin';
import type { PoolEvent, Registry } from '@es/pool';
import type { ContinuationRecord } from '@es/proxy';

/** One line per pool event: `ready 17.0.1`, `gone job 17: no heartbeat for 4 s` ... */
export function logPoolEvent(log: Logger, event: PoolEvent): void {
  const { type, ...fields } = event;
  log.info(
    { event: type, ...fields },
    `${type}${event.workerId ? ` ${event.workerId}` : event.jobId ? ` job ${event.jobId}` : ''}${event.reason ? `: ${event.reason}` : ''}`,
  );
}

/**
 * A cut generation, as a pool event (the admin's event log, `/metrics`) and a log line: info
 * when it was continued, a warning when the client got an error.
 */
export function logContinuation(log: Logger, registry: Registry, record: ContinuationRecord): void {
  const { requestId, fromWorker, toWorker, outcome, reason, generatedTokens } = record;
  const target = toWorker === undefined ? '' : ` on ${toWorker}`;
  const message = `generation ${requestId} cut on ${fromWorker} after ${generatedTokens} tokens (${record.cause}): ${outcome}${target} (${reason})`;
  registry.emit({
    type: 'continuation',
    deployment: record.deployment,
    workerId: fromWorker,
    reason: message,
  });
  const fields = { requestId, fromWorker, toWorker, outcome, reason, waitMs: record.waitMs };
  if (outcome === 'continued' || outcome === 'inexact') log.info(fields, message);
  else log.warn(fields, message);
}

/** One line per job still on its way (not ended, not ready): `job 17: <progress line>`. */
export function logProgress(log: Logger, admin: Pick<AdminApi, 'status'>): void {
  for (const d of admin.status().deployments) {
    for (const j of d.jobs) {
      if (j.endedAt !== undefined || j.progress.at(-1)?.phase === 'ready') continue;
      log.info(
        { event: 'progress', deployment: d.name, jobId: j.jobId, state: j.state, reason: j.reason },
        `job ${j.jobId}: ${j.progressLine}`,
      );
    }
  }
}
