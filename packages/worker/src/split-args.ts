import { WorkerError } from './errors.js';

/**
 * Splits a command-line fragment the way a POSIX shell splits words: whitespace separates,
 * single quotes keep everything literal, double quotes keep whitespace and honour `\"`,
 * `\\`, `\$` and `` \` ``, and a backslash outside quotes escapes the next character.
 * Nothing is expanded and nothing runs: the result goes straight into an argv.
 * @throws WorkerError `invalid_extra_args` on an unterminated quote or a trailing backslash.
 * @example
 * splitArgs(`--chat-template "a b" --x='{"k": 1}'`);
 * // → ['--chat-template', 'a b', '--x={"k": 1}']
 */
export function splitArgs(input: string, field = 'engine-extra-args'): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < input.length; i++) {
    const char = input.charAt(i);
    if (quote === "'") {
      if (char === "'") quote = undefined;
      else word += char;
      continue;
    }
    if (quote === '"') {
      if (char === '"') quote = undefined;
      else if (char === '\\' && i + 1 < input.length && '"\\$`'.includes(input.charAt(i + 1))) {
        word += input.charAt(i + 1);
        i += 1;
      } else word += char;
      continue;
    }
    if (/\s/.test(char)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (char === "'" || char === '"') quote = char;
    else if (char === '\\') {
      if (i + 1 >= input.length) {
        throw new WorkerError('invalid_extra_args', `--${field} ends with a lone backslash`, {
          param: field,
        });
      }
      // A backslash-newline is a line continuation, as in a shell.
      if (input.charAt(i + 1) !== '\n') word += input.charAt(i + 1);
      i += 1;
    } else word += char;
  }
  if (quote !== undefined) {
    throw new WorkerError(
      'invalid_extra_args',
      `--${field} has an unterminated ${quote === '"' ? 'double' : 'single'} quote: ${input}`,
      { param: field },
    );
  }
  if (inWord) words.push(word);
  return words;
}
