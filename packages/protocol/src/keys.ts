import { createHmac } from 'node:crypto';

/** `<jobId>.<restartCount>.<index>`: the id of one engine instance incarnation. */
export function formatWorkerId(jobId: string, restartCount: number, index: number): string {
  return `${jobId}.${restartCount}.${index}`;
}

/** Keys derived from the shared secret file (same-user trust, like munge). */
export interface DerivedKeys {
  /**
   * HMAC key of the worker protocol: workers sign their requests with it and the scheduler
   * its answers (see `signWorkerRequest`). It never crosses the wire.
   */
  workerKey: string;
  /** Bearer token for the admin API, when no explicit admin key is configured. */
  adminToken: string;
  /**
   * HMAC key of the data plane's routing-table watch stream (`ROUTING_WATCH_ROUTE`): a
   * data-plane process signs its subscription with it and the scheduler every line of the
   * table. Separate from `workerKey` so that neither side's signatures can pass for the
   * other's (a worker request is never a subscription, a table line never a worker answer),
   * and so that the key a data-plane process holds cannot sign worker requests. It never
   * crosses the wire.
   */
  dataPlaneKey: string;
}

/**
 * Derive the worker protocol's signing key and the admin token from a secret
 * (surrounding whitespace is ignored, so a file's trailing newline does not matter).
 * @example
 * const { workerKey } = deriveKeys(readSecret(secretFile));
 */
export function deriveKeys(secret: string): DerivedKeys {
  const derive = (purpose: string) =>
    createHmac('sha256', secret.trim()).update(`elastic-serving:${purpose}`).digest('hex');
  return {
    // Not 'worker': that derived the bearer token earlier versions sent in clear.
    workerKey: derive('worker-signing'),
    adminToken: derive('admin'),
    dataPlaneKey: derive('data-plane-signing'),
  };
}

/**
 * The key one job's engines require, on every path of the worker's authenticating front
 * (and as `VLLM_API_KEY` of vLLM): derived from the secret and the job id, so a key that
 * leaks (an engine's own code, a core dump) opens that job's engines only.
 * @example
 * const key = deriveEngineKey(readSecret(secretFile), '4242'); // 'es-engine-…'
 */
export function deriveEngineKey(secret: string, jobId: string): string {
  const mac = createHmac('sha256', secret.trim()).update(`elastic-serving:engine:${jobId}`);
  return `es-engine-${mac.digest('hex').slice(0, 48)}`;
}

/**
 * The secret and the keys derived from it (the worker key, the admin token, the data-plane
 * key, and the
 * engine key of each of `jobIds`): what a log line must never show.
 */
export function derivedSecrets(secret: string, jobIds: readonly string[] = []): string[] {
  const { workerKey, adminToken, dataPlaneKey } = deriveKeys(secret);
  return [
    secret.trim(),
    workerKey,
    adminToken,
    dataPlaneKey,
    ...jobIds.map((id) => deriveEngineKey(secret, id)),
  ];
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
