import { describe, expect, it } from 'vitest';
import {
  createRoutingWatchSigner,
  createRoutingWatchVerifier,
  deriveKeys,
  derivedSecrets,
  jobIdOfWorker,
} from '../src/index.js';
import type { RoutingWatchEvent } from '../src/index.js';

const key = deriveKeys('a-secret-of-enough-length-0123456789').dataPlaneKey;
const events: RoutingWatchEvent[] = [
  {
    type: 'snapshot',
    version: 4,
    deployments: [],
    workers: [],
    dataPlane: {
      clientKeyHashes: [],
      corsOrigins: [],
      exposeSelectedEndpoint: false,
      maxContinuations: 3,
      stallTimeoutMs: 30_000,
      bodyBudgetBytes: 1 << 30,
      clientIdleTimeoutMs: 120_000,
      maxConnections: 10_000,
    },
  },
  { type: 'worker-unroutable', version: 5, deployment: 'd', workerId: '7.0.0', reason: 'failed' },
  { type: 'heartbeat', version: 5 },
];

describe('routing watch lines', () => {
  it('verifies the lines of one stream in order', () => {
    const signer = createRoutingWatchSigner(key, 'nonce-0123456789abcdef');
    const verifier = createRoutingWatchVerifier(key, 'nonce-0123456789abcdef');
    for (const event of events) {
      const line = signer.line(event);
      expect(line.endsWith('\n')).toBe(true);
      expect(verifier.check(line.slice(0, -1))).toEqual({ ok: true, event });
    }
  });

  it('refuses a line dropped, reordered, replayed from another subscription or edited', () => {
    const lines = (nonce: string) => {
      const signer = createRoutingWatchSigner(key, nonce);
      return events.map((e) => signer.line(e).slice(0, -1));
    };
    const [first, second, third] = lines('nonce-0123456789abcdef');
    const fresh = () => createRoutingWatchVerifier(key, 'nonce-0123456789abcdef');
    expect(fresh().check(second!)).toMatchObject({ ok: false, code: 'bad_signature' });
    const skipping = fresh();
    skipping.check(first!);
    expect(skipping.check(third!)).toMatchObject({ ok: false, code: 'bad_signature' });
    const other = createRoutingWatchVerifier(key, 'another-nonce-0123456789');
    expect(other.check(first!)).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(fresh().check(first!.replace('"version":4', '"version":9'))).toMatchObject({
      ok: false,
      code: 'bad_signature',
    });
    expect(fresh().check(JSON.stringify(events[0]))).toMatchObject({
      ok: false,
      code: 'bad_signature',
    });
  });

  it('refuses a signed line that is not a known event', () => {
    const signer = createRoutingWatchSigner(key, 'nonce-0123456789abcdef');
    const line = signer.line({ type: 'nonsense', version: 1 } as unknown as RoutingWatchEvent);
    const check = createRoutingWatchVerifier(key, 'nonce-0123456789abcdef').check(
      line.slice(0, -1),
    );
    expect(check).toMatchObject({ ok: false, code: 'invalid_event' });
  });

  it('has its own key, redacted from logs like the others', () => {
    const secret = 'a-secret-of-enough-length-0123456789';
    const keys = deriveKeys(secret);
    expect(new Set([keys.dataPlaneKey, keys.workerKey, keys.adminToken]).size).toBe(3);
    expect(derivedSecrets(secret)).toContain(keys.dataPlaneKey);
  });

  it('finds the job of a worker id', () => {
    expect(jobIdOfWorker('4242.1.3')).toBe('4242');
    expect(jobIdOfWorker('local-7.0.0')).toBe('local-7');
  });
});
