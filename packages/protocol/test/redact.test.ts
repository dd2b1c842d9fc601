import { describe, expect, it } from 'vitest';
import {
  REDACTED,
  deriveEngineKey,
  derivedSecrets,
  redactSecrets,
  redactingStream,
} from '../src/index.js';

describe('redaction of secrets in log lines', () => {
  it('replaces every occurrence of every secret, the longest first', () => {
    const secrets = ['abcdef123456', 'abcdef123456-and-more'];
    expect(redactSecrets('a=abcdef123456-and-more b=abcdef123456 c=abcdef123456', secrets)).toBe(
      `a=${REDACTED} b=${REDACTED} c=${REDACTED}`,
    );
  });

  it('redacts the engine key of any job, known or not', () => {
    const key = deriveEngineKey('s', '77');
    expect(redactSecrets(`Bearer ${key}.`, [])).toBe(`Bearer ${REDACTED}.`);
  });

  it('leaves short strings alone (they would redact ordinary words)', () => {
    expect(redactSecrets('the model is ready', ['the', 'ready'])).toBe('the model is ready');
  });

  it('a stream redacts the secret and the keys derived from it, as they are known at each line', () => {
    const lines: string[] = [];
    let secrets: readonly string[] = [];
    const stream = redactingStream(() => secrets, { write: (text) => lines.push(text) });
    const known = derivedSecrets('a shared secret\n', ['4242']);
    stream.write(`early ${known[0] ?? ''}\n`);
    secrets = known;
    stream.write(`{"msg":"engine started","key":"${known.join(' ')}"}\n`);
    expect(lines[0]).toContain(known[0]);
    expect(lines[1]).toBe(
      `{"msg":"engine started","key":"${known.map(() => REDACTED).join(' ')}"}\n`,
    );
    // The secret, the worker key, the admin token, the data-plane key, one engine key.
    expect(known).toHaveLength(5);
  });
});
