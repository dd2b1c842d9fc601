import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import {
  ENGINE_KINDS,
  ENGINE_NAMES,
  HeartbeatRequestSchema,
  RegisterRequestSchema,
  WORKER_API_PREFIX,
  WORKER_ENV,
  WORKER_ROUTES,
  deriveEngineKey,
  deriveKeys,
  formatWorkerId,
  isEngineKind,
  workerRoutePath,
} from '../src/index.js';
import type { RegisterRequest } from '../src/index.js';

const registration: RegisterRequest = {
  deployment: 'llama',
  jobId: '42',
  restartCount: 0,
  index: 1,
  host: 'gpu1',
  port: 8002,
  gpus: [2, 3],
  engine: 'vllm',
  model: 'meta-llama/Llama-3-70B',
  node: 'gpu1',
  state: 'loading',
};

describe('the worker protocol contract', () => {
  it('derives the same keys on every version that signs (workers and schedulers agree)', () => {
    expect(deriveKeys('a shared secret\n')).toEqual({
      workerKey: '88718551df634686d17bdc79d74fb9d2dbe5444ace98c9661c3b89f6d155e6a8',
      adminToken: '09f9a5ae167f120cc2b49e8ec4ac59ebafdc0d3c896af9e6807df61496de2bcb',
      // Added with the routing-table watch stream (issue 17); the two above are unchanged.
      dataPlaneKey: '06912a33569da32934c7a5c5cbc3fbb15e63de45e241a69124ed4eb20a593439',
    });
  });

  it('signs with a key that is not the bearer token earlier versions sent in clear', () => {
    // The worker token of the bearer-token versions, collected by anyone on the port.
    const sentInClear = 'fbeb94bb61d040e96fb56949ad785c794c421a1e4b746f55c13f04e7129bd56d';
    expect(deriveKeys('a shared secret').workerKey).not.toBe(sentInClear);
  });

  it('derives one engine key per job: a key of one job opens no other', () => {
    const key = deriveEngineKey('a shared secret\n', '4242');
    expect(key).toMatch(/^es-engine-[0-9a-f]{48}$/);
    expect(deriveEngineKey('a shared secret', '4242')).toBe(key);
    expect(deriveEngineKey('a shared secret', '4243')).not.toBe(key);
    expect(deriveEngineKey('another secret', '4242')).not.toBe(key);
    expect(Object.values(deriveKeys('a shared secret'))).not.toContain(key);
  });

  it('names a worker <job>.<restart count>.<index>', () => {
    expect(formatWorkerId('42', 1, 3)).toBe('42.1.3');
  });

  it('has one path per route, filled with the encoded worker id', () => {
    expect(WORKER_ROUTES.heartbeat.path).toBe(`${WORKER_API_PREFIX}/:workerId/heartbeat`);
    expect(workerRoutePath('register')).toBe('/api/v1/workers/register');
    expect(workerRoutePath('heartbeat', '42.0.1')).toBe('/api/v1/workers/42.0.1/heartbeat');
    expect(workerRoutePath('drain', 'a/b c')).toBe('/api/v1/workers/a%2Fb%20c/drain');
    expect(workerRoutePath('deregister', '7.0.0')).toBe('/api/v1/workers/7.0.0/deregister');
    // One hand-over message for every instance of a worker: the ids are in the body.
    expect(workerRoutePath('handover')).toBe('/api/v1/workers/handover');
  });

  it('keeps the environment names the batch scripts of running jobs use', () => {
    expect(WORKER_ENV).toEqual({
      schedulerUrl: 'ES_SCHEDULER_URL',
      schedulerUrlFile: 'ES_SCHEDULER_URL_FILE',
      secretFile: 'ES_SECRET_FILE',
      deployment: 'ES_DEPLOYMENT',
    });
  });

  it('lists every engine once, each with a name', () => {
    expect(ENGINE_KINDS).toEqual(['vllm', 'sglang', 'mock']);
    expect(Object.keys(ENGINE_NAMES).sort()).toEqual([...ENGINE_KINDS].sort());
    expect(ENGINE_KINDS.every(isEngineKind)).toBe(true);
    expect(isEngineKind('trt')).toBe(false);
  });

  it('accepts a registration and refuses one with an unknown engine or a bad port', () => {
    expect(v.parse(RegisterRequestSchema, registration)).toEqual(registration);
    expect(v.safeParse(RegisterRequestSchema, { ...registration, engine: 'trt' }).success).toBe(
      false,
    );
    expect(v.safeParse(RegisterRequestSchema, { ...registration, port: 0 }).success).toBe(false);
  });

  it('bounds the reported load', () => {
    const beat = { state: 'ready', restartCount: 0, load: { running: 1, waiting: 0 } };
    expect(v.safeParse(HeartbeatRequestSchema, beat).success).toBe(true);
    const over = { ...beat, load: { running: 1, waiting: 0, kvCacheUsage: 1.5 } };
    expect(v.safeParse(HeartbeatRequestSchema, over).success).toBe(false);
  });
});
