import { describe, expect, it } from 'vitest';
import { WorkerError, splitArgs } from '../src/index.js';

describe('splitArgs', () => {
  it.each([
    ['', []],
    ['   ', []],
    ['--enforce-eager', ['--enforce-eager']],
    ['  --a 1\t--b\n2  ', ['--a', '1', '--b', '2']],
    [`--chat-template "a b"`, ['--chat-template', 'a b']],
    [`--x='{"k": 1}'`, ['--x={"k": 1}']],
    [`--json '{"a": "b c"}'`, ['--json', '{"a": "b c"}']],
    [`"say \\"hi\\"" 'it''s'`, ['say "hi"', 'its']],
    [`a\\ b c`, ['a b', 'c']],
    [`"" ''`, ['', '']],
    [`'$HOME' "$HOME" ; rm -rf /`, ['$HOME', '$HOME', ';', 'rm', '-rf', '/']],
    [`"back\\\\slash" 'no\\escape'`, ['back\\slash', 'no\\escape']],
    ['--a \\\n--b', ['--a', '--b']],
  ])('%j → %j', (input, expected) => {
    expect(splitArgs(input)).toEqual(expected);
  });

  it.each([[`--a "open`], [`--a 'open`], ['--a \\']])('rejects %j naming the flag', (input) => {
    const error = (() => {
      try {
        splitArgs(input);
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(WorkerError);
    expect((error as WorkerError).code).toBe('invalid_extra_args');
    expect((error as WorkerError).message).toContain('--engine-extra-args');
  });
});
