import { describe, expect, it } from 'vitest';
import { clientKeyHash, createBearerCheck, createKeyCheck } from '../src/index.js';

describe('createBearerCheck', () => {
  const check = createBearerCheck(['sk-one', 'sk-two']);

  it.each([
    ['Bearer sk-one', true],
    ['Bearer sk-two', true],
    ['bearer sk-two', true],
    ['  Bearer   sk-one  ', true],
    ['Bearer sk-three', false],
    ['Bearer sk-on', false],
    ['Bearer sk-one-more', false],
    ['Basic sk-one', false],
    ['sk-one', false],
    ['Bearer ', false],
    ['Bearer', false],
    ['', false],
    [undefined, false],
    [null, false],
  ])('%j → %s', (header, expected) => {
    expect(check(header)).toBe(expected);
  });

  it('matches nothing without configured keys', () => {
    expect(createBearerCheck([])('Bearer sk-one')).toBe(false);
  });

  it('matches keys known by their hash only (clientKeyHash), and never a malformed hash', () => {
    const hashed = createBearerCheck([], [clientKeyHash('sk-hashed'), 'not-a-hash']);
    expect(hashed('Bearer sk-hashed')).toBe(true);
    expect(hashed('Bearer sk-other')).toBe(false);
    expect(hashed('Bearer not-a-hash')).toBe(false);
    // Together with plain keys.
    const both = createBearerCheck(['sk-plain'], [clientKeyHash('sk-hashed')]);
    expect([both('Bearer sk-plain'), both('Bearer sk-hashed')]).toEqual([true, true]);
  });
});

describe('createKeyCheck', () => {
  it('takes the key itself (a form field), never an empty one', () => {
    const check = createKeyCheck(['admin-key']);
    expect(check('admin-key')).toBe(true);
    expect(check('admin-key ')).toBe(false);
    expect(check('')).toBe(false);
    expect(check(undefined)).toBe(false);
    expect(createKeyCheck([''])('')).toBe(false);
  });
});
