import { describe, expect, it } from 'vitest';
import {
  MAX_REMEMBERED_NONCES,
  WORKER_SIGNATURE_HEADERS,
  WORKER_SIGNATURE_WINDOW_MS,
  createWorkerRequestVerifier,
  deriveKeys,
  isSignedWorkerAnswer,
  signWorkerAnswer,
  signWorkerRequest,
} from '../src/index.js';
import type { WorkerRequestParts } from '../src/index.js';

const { workerKey: key } = deriveKeys('a shared secret');
const START = 1_800_000_000_000;
const path = '/api/v1/workers/42.0.1/heartbeat';
const body = JSON.stringify({ state: 'ready', restartCount: 0 });
const parts: WorkerRequestParts = { method: 'POST', path, body };

/** A verifier on a settable clock, started at START. */
function verifierAt(options: { maxNonces?: number } = {}) {
  let now = START;
  const verifier = createWorkerRequestVerifier({ key, now: () => now, ...options });
  return {
    verifier,
    set: (ms: number) => {
      now = ms;
    },
    check: (headers: Record<string, string>, over: Partial<WorkerRequestParts> = {}) =>
      verifier.verify({ ...parts, ...over, header: (name) => headers[name] }),
  };
}

describe('signed worker requests', () => {
  it('accepts a fresh signed request once; its replay is refused as replayed', () => {
    const { check } = verifierAt();
    const headers = signWorkerRequest(key, parts, { now: START + 5 });
    expect(check(headers)).toEqual({ ok: true, nonce: headers['x-es-nonce'] });
    expect(check(headers)).toMatchObject({
      ok: false,
      status: 401,
      code: 'replayed',
      param: 'x-es-nonce',
    });
  });

  it.each([
    ['a tampered body', { body: body.replace('ready', 'draining') }],
    ['another path', { path: '/api/v1/workers/42.0.1/drain' }],
    ['another worker id', { path: '/api/v1/workers/42.0.2/heartbeat' }],
    ['another method', { method: 'PUT' }],
  ])('refuses %s as bad_signature', (_, over) => {
    const { check } = verifierAt();
    const headers = signWorkerRequest(key, parts, { now: START + 5 });
    expect(check(headers, over)).toMatchObject({
      ok: false,
      status: 401,
      code: 'bad_signature',
      param: 'x-es-signature',
    });
    // Refused before the nonce was taken: the genuine request still passes.
    expect(check(headers)).toMatchObject({ ok: true });
  });

  it('refuses another key, a changed timestamp or nonce, and missing or malformed headers', () => {
    const { check } = verifierAt();
    const good = signWorkerRequest(key, parts, { now: START + 5 });
    const cases: [Record<string, string>, string][] = [
      [signWorkerRequest(deriveKeys('another secret').workerKey, parts), 'x-es-signature'],
      [{ ...good, 'x-es-timestamp': String(START + 6) }, 'x-es-signature'],
      [{ ...good, 'x-es-nonce': `${good['x-es-nonce']}0` }, 'x-es-signature'],
      [{ ...good, 'x-es-signature': 'f'.repeat(64) }, 'x-es-signature'],
      [{ ...good, 'x-es-signature': 'short' }, 'x-es-signature'],
      [{ ...good, 'x-es-timestamp': 'yesterday' }, 'x-es-timestamp'],
      [{ ...good, 'x-es-nonce': 'a b' }, 'x-es-nonce'],
      [{ 'x-es-timestamp': String(START), 'x-es-nonce': 'n'.repeat(32) }, 'x-es-signature'],
      [{}, 'x-es-signature'],
    ];
    for (const [headers, param] of cases) {
      expect(check(headers)).toMatchObject({ ok: false, code: 'bad_signature', param });
    }
    const missing = check({});
    expect(missing.ok ? '' : missing.message).toMatch(
      /^missing x-es-signature: .*signWorkerRequest/,
    );
  });

  it('refuses a timestamp outside ±window as stale, naming the skew and the fix', () => {
    const { check, set } = verifierAt();
    set(START + 60_000);
    const old = check(signWorkerRequest(key, parts, { now: START + 60_000 - 31_000 }));
    expect(old).toMatchObject({ ok: false, status: 401, code: 'stale', param: 'x-es-timestamp' });
    expect(old.ok ? '' : old.message).toMatch(/31 s behind the scheduler's clock \(window ±30 s\)/);
    const ahead = check(signWorkerRequest(key, parts, { now: START + 60_000 + 31_000 }));
    expect(ahead.ok ? '' : ahead.message).toMatch(/31 s ahead of the scheduler's clock.*NTP/);
    // Inside the window either way: accepted.
    expect(check(signWorkerRequest(key, parts, { now: START + 60_000 - 29_000 })).ok).toBe(true);
    expect(check(signWorkerRequest(key, parts, { now: START + 60_000 + 29_000 })).ok).toBe(true);
    expect(WORKER_SIGNATURE_WINDOW_MS).toBe(30_000);
  });

  it('refuses a request signed before the verifier started (a restart), even inside the window', () => {
    const { check, set } = verifierAt();
    const captured = signWorkerRequest(key, parts, { now: START - 1 });
    expect(check(captured)).toMatchObject({ ok: false, code: 'stale' });
    set(START + 10_000);
    const refused = check(captured);
    expect(refused).toMatchObject({ ok: false, code: 'stale', param: 'x-es-timestamp' });
    expect(refused.ok ? '' : refused.message).toMatch(/before this scheduler started.*retry/);
    // A worker whose clock is behind: refused now, accepted once its clock passes the start.
    expect(check(signWorkerRequest(key, parts, { now: START + 10_000 })).ok).toBe(true);
  });

  it('forgets a nonce once its timestamp has left the window, and stays bounded', () => {
    const { check, set, verifier } = verifierAt({ maxNonces: 3 });
    for (let i = 0; i < 3; i++)
      expect(check(signWorkerRequest(key, parts, { now: START })).ok).toBe(true);
    expect(verifier.remembered).toBe(3);
    const full = check(signWorkerRequest(key, parts, { now: START }));
    expect(full).toMatchObject({ ok: false, status: 503, code: 'busy' });
    set(START + WORKER_SIGNATURE_WINDOW_MS + 1);
    expect(check(signWorkerRequest(key, parts, { now: START + 30_000 })).ok).toBe(true);
    expect(verifier.remembered).toBe(1);
    expect(MAX_REMEMBERED_NONCES).toBeGreaterThanOrEqual(100_000);
  });
});

describe('requests signed for a port (audience)', () => {
  const bound = (ports: string[]) =>
    createWorkerRequestVerifier({ key, now: () => START + 5, audiences: () => ports });
  const check = (verifier: ReturnType<typeof bound>, headers: Record<string, string>) =>
    verifier.verify({ ...parts, header: (name) => headers[name] });

  it('accepts a request signed for this port; one signed for another port is refused before its nonce is taken', () => {
    const forHere = signWorkerRequest(key, { ...parts, audience: '8780' }, { now: START + 5 });
    expect(forHere[WORKER_SIGNATURE_HEADERS.audience]).toBe('8780');
    const relayed = signWorkerRequest(key, { ...parts, audience: '9999' }, { now: START + 5 });
    const verifier = bound(['8780']);
    expect(check(verifier, relayed)).toMatchObject({
      ok: false,
      status: 401,
      code: 'wrong_audience',
      param: 'x-es-audience',
    });
    expect(check(verifier, forHere)).toMatchObject({ ok: true });
  });

  it('refuses a request signed for no port where one is required, and a changed audience header', () => {
    const verifier = bound(['8780']);
    const unbound = signWorkerRequest(key, parts, { now: START + 5 });
    expect(check(verifier, unbound)).toMatchObject({ ok: false, code: 'wrong_audience' });
    const other = signWorkerRequest(key, { ...parts, audience: '9999' }, { now: START + 5 });
    // The squatter rewrites the header to this port: the signature no longer matches.
    const rewritten = { ...other, [WORKER_SIGNATURE_HEADERS.audience]: '8780' };
    expect(check(verifier, rewritten)).toMatchObject({ ok: false, code: 'bad_signature' });
  });

  it('a verifier without audiences accepts both forms (worker requests are signed for none)', () => {
    const { check: open } = verifierAt();
    expect(
      open(signWorkerRequest(key, { ...parts, audience: '1' }, { now: START + 5 })),
    ).toMatchObject({ ok: true });
    expect(open(signWorkerRequest(key, parts, { now: START + 6 }))).toMatchObject({ ok: true });
  });
});

describe('signed answers', () => {
  const answer = { nonce: 'n'.repeat(32), status: 409, body: '{"error":{}}' };

  it('verifies an answer signed with the key over the nonce, status and body', () => {
    const signature = signWorkerAnswer(key, answer);
    expect(isSignedWorkerAnswer(key, answer, signature)).toBe(true);
    expect(isSignedWorkerAnswer(key, answer, undefined)).toBe(false);
    expect(isSignedWorkerAnswer(key, answer, null)).toBe(false);
    expect(isSignedWorkerAnswer(key, { ...answer, status: 200 }, signature)).toBe(false);
    expect(isSignedWorkerAnswer(key, { ...answer, body: '{}' }, signature)).toBe(false);
    expect(isSignedWorkerAnswer(key, { ...answer, nonce: 'm'.repeat(32) }, signature)).toBe(false);
    expect(isSignedWorkerAnswer(deriveKeys('x').workerKey, answer, signature)).toBe(false);
  });

  it('a request signature does not pass for an answer', () => {
    const headers = signWorkerRequest(key, parts, { nonce: answer.nonce });
    expect(isSignedWorkerAnswer(key, answer, headers[WORKER_SIGNATURE_HEADERS.signature])).toBe(
      false,
    );
  });
});
