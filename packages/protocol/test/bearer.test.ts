import { describe, expect, it } from 'vitest';
import { createBearerCheck, createKeyCheck } from '../src/index.js';

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
