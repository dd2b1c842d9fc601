import { describe, expect, it } from 'vitest';
import { ProviderError, classifyProviderError, isProviderError } from '../src/index.js';

class DriverError extends ProviderError<'DRIVER_BUSY'> {
  override readonly name = 'DriverError';
}

describe('ProviderError', () => {
  it('carries code, kind, ambiguous and cause, and keeps a subclass name', () => {
    const cause = new Error('inner');
    const error = new DriverError('DRIVER_BUSY', 'busy', { kind: 'transient', cause });
    expect(error).toBeInstanceOf(Error);
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({
      name: 'DriverError',
      code: 'DRIVER_BUSY',
      kind: 'transient',
      ambiguous: false,
      message: 'busy',
      cause,
    });
    expect(new ProviderError('x', 'm', { kind: 'policy', ambiguous: true })).toMatchObject({
      name: 'ProviderError',
      ambiguous: true,
    });
  });

  it('is recognised by isProviderError, and foreign errors are not', () => {
    expect(isProviderError(new DriverError('DRIVER_BUSY', 'busy', { kind: 'policy' }))).toBe(true);
    expect(isProviderError(new Error('x'))).toBe(false);
    expect(isProviderError(Object.assign(new Error('x'), { kind: 'policy', code: 'X' }))).toBe(
      false,
    );
    expect(isProviderError(undefined)).toBe(false);
    expect(isProviderError('policy')).toBe(false);
  });
});

describe('classifyProviderError', () => {
  it('takes a ProviderError at its word', () => {
    const error = new DriverError('DRIVER_BUSY', 'sbatch timed out', {
      kind: 'transient',
      ambiguous: true,
    });
    expect(classifyProviderError(error)).toEqual({
      kind: 'transient',
      ambiguous: true,
      message: 'sbatch timed out',
    });
  });

  it('reads kind and ambiguous of foreign errors, and makes anything else transient', () => {
    expect(
      classifyProviderError(Object.assign(new Error('limit'), { kind: 'policy', ambiguous: 1 })),
    ).toEqual({ kind: 'policy', ambiguous: true, message: 'limit' });
    expect(classifyProviderError(Object.assign(new Error('odd'), { kind: 'fatal' }))).toEqual({
      kind: 'transient',
      ambiguous: false,
      message: 'odd',
    });
    expect(classifyProviderError(new Error('plain'))).toEqual({
      kind: 'transient',
      ambiguous: false,
      message: 'plain',
    });
    expect(classifyProviderError('a string')).toEqual({
      kind: 'transient',
      ambiguous: false,
      message: 'a string',
    });
    expect(classifyProviderError(null)).toEqual({
      kind: 'transient',
      ambiguous: false,
      message: 'null',
    });
  });
});
