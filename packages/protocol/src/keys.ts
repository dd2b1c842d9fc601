import { createHmac } from 'node:crypto';

/** `<jobId>.<restartCount>.<index>`: the id of one engine instance incarnation. */
export function formatWorkerId(jobId: string, restartCount: number, index: number): string {
  return `${jobId}.${restartCount}.${index}`;
}

/** Keys derived from the shared secret file (same-user trust, like munge). */
export interface DerivedKeys {
  /** Bearer token workers present to the scheduler's worker routes. */
  workerToken: string;
  /** `--api-key` given to engines, so only the proxy can reach them. */
  engineApiKey: string;
  /** Bearer token for the admin API, when no explicit admin key is configured. */
  adminToken: string;
}

/**
 * Derive the worker token, the engine API key and the admin token from a secret
 * (surrounding whitespace is ignored, so a file's trailing newline does not matter).
 * @example
 * const { workerToken } = deriveKeys(readSecret(secretFile));
 */
export function deriveKeys(secret: string): DerivedKeys {
  const derive = (purpose: string) =>
    createHmac('sha256', secret.trim()).update(`elastic-serving:${purpose}`).digest('hex');
  return {
    workerToken: derive('worker'),
    engineApiKey: `es-engine-${derive('engine').slice(0, 40)}`,
    adminToken: derive('admin'),
  };
}

/** Environment variables the scheduler sets for a worker (batch script or local spawn). */
export const WORKER_ENV = {
  /** The scheduler's URL when the job was submitted. */
  schedulerUrl: 'ES_SCHEDULER_URL',
  /** File whose first line is the scheduler's current URL (it writes `<log dir>/scheduler-url`). */
  schedulerUrlFile: 'ES_SCHEDULER_URL_FILE',
  /** The shared secret file (see `readSecret`). */
  secretFile: 'ES_SECRET_FILE',
  /** The deployment the job serves. */
  deployment: 'ES_DEPLOYMENT',
} as const;
