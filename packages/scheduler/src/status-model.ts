/**
 * What the seed's status routes read of the reconciler, computed once a second rather than
 * per request: job counts over all deployments and, per deployment, why it is not growing.
 * Pure, so the wording is table-tested.
 */
import type { ReconcilerStatus } from '@es/pool';
import type { DeploymentNote } from './seed-routes.js';

/** The seed status routes' read model at one moment. */
export interface SeedStatusSummary {
  /** Jobs the cluster last reported pending (configuring included) and running. */
  jobCounts: { pending: number; running: number };
  /** Per deployment: its permanent error, backoff and launch failures, in words. */
  deploymentNotes: Map<string, DeploymentNote>;
}

/** Whole seconds from `now` until `at` (ms), never negative. */
function secondsUntil(at: number, now: number): number {
  return Math.max(0, Math.round((at - now) / 1000));
}

/**
 * The job counts and deployment notes of a reconciler status at `now` (ms).
 * @example
 * const { jobCounts, deploymentNotes } = summarizeStatus(reconciler.status(), Date.now());
 */
export function summarizeStatus(status: ReconcilerStatus, now: number): SeedStatusSummary {
  let pending = 0;
  let running = 0;
  const deploymentNotes = new Map<string, DeploymentNote>();
  for (const d of status.deployments) {
    const note: DeploymentNote = {};
    if (d.permanentError) note.permanentError = d.permanentError;
    if (d.backoff) {
      note.backoff = `${d.backoff.kind} failure, retrying in ${secondsUntil(d.backoff.until, now)} s: ${d.backoff.message}`;
    }
    if (d.launchFailures) {
      const { count, lastJobId, message, until } = d.launchFailures;
      note.launchFailures = `${count} job(s) in a row ended before a worker was ready (last: job ${lastJobId}, ${message}); next replacement in ${secondsUntil(until, now)} s; its output: es logs ${lastJobId}`;
    }
    deploymentNotes.set(d.name, note);
    for (const j of d.jobs) {
      if (j.state === 'PENDING' || j.state === 'CONFIGURING') pending += 1;
      else if (j.state === 'RUNNING') running += 1;
    }
  }
  return { jobCounts: { pending, running }, deploymentNotes };
}
