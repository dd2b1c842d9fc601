/**
 * JSON read in place, on the client's bytes: the syntax checked and the top-level members
 * and array elements found without making a string of them. Used for bodies too large to
 * parse whole (see `parseRequest`), and to rebuild a body from its own bytes (`withMembers`).
 */

export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** The byte range of one value (a member's value, or an array element) inside a buffer. */
export interface Span {
  start: number;
  end: number;
}

/** A top-level member of an object: its name and the ranges of the member and of its value. */
export interface MemberSpan extends Span {
  name: unknown;
  valueStart: number;
}

export function skipSpace(raw: Buffer, at: number): number {
  let i = at;
  // Space, tab, line feed, carriage return: JSON's whitespace.
  while (raw[i] === 0x20 || raw[i] === 0x09 || raw[i] === 0x0a || raw[i] === 0x0d) i++;
  return i;
}

/** The index after the string that starts (with its quote) at `at`; -1 if it does not end. */
export function stringEnd(raw: Buffer, at: number): number {
  let from = at + 1;
  for (;;) {
    const quote = raw.indexOf(QUOTE, from);
    if (quote < 0) return -1;
    let backslashes = 0;
    while (raw[quote - 1 - backslashes] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    from = quote + 1;
  }
}

/** The index after the value that starts at `at` (before any `,` or `}` that ends it). */
export function valueEnd(raw: Buffer, at: number): number {
  let depth = 0;
  let i = at;
  while (i >= 0 && i < raw.length) {
    const byte = raw[i]!;
    if (byte === QUOTE) {
      i = stringEnd(raw, i);
      if (depth === 0) return i;
      continue;
    }
    if (byte === OPEN_BRACE || byte === OPEN_BRACKET) depth++;
    else if (byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
      // At depth 0: the enclosing container ends a number, `true`, `false` or `null`.
      if (depth === 0) return i;
      depth--;
      if (depth === 0) return i + 1;
    } else if (byte === COMMA && depth === 0) return i;
    i++;
  }
  return -1;
}

/** The end of `span` with the whitespace before it left out. */
function trimEnd(raw: Buffer, end: number): number {
  let i = end;
  while (raw[i - 1] === 0x20 || raw[i - 1] === 0x09 || raw[i - 1] === 0x0a || raw[i - 1] === 0x0d)
    i--;
  return i;
}

/**
 * The members of the JSON object starting at `at` (a member's `start` is its name's quote,
 * `end` the end of its value); undefined if it is not an object.
 */
export function objectMembers(raw: Buffer, at = 0): MemberSpan[] | undefined {
  let i = skipSpace(raw, at);
  if (raw[i] !== OPEN_BRACE) return undefined;
  const members: MemberSpan[] = [];
  i = skipSpace(raw, i + 1);
  if (raw[i] === CLOSE_BRACE) return members;
  for (;;) {
    if (raw[i] !== QUOTE) return undefined;
    const start = i;
    const keyEnd = stringEnd(raw, i);
    if (keyEnd < 0) return undefined;
    const name: unknown = JSON.parse(raw.toString('utf8', start, keyEnd));
    i = skipSpace(raw, keyEnd);
    if (raw[i] !== COLON) return undefined;
    const valueStart = skipSpace(raw, i + 1);
    const end = valueEnd(raw, valueStart);
    if (end < 0) return undefined;
    members.push({ name, start, end: trimEnd(raw, end), valueStart });
    i = skipSpace(raw, end);
    if (raw[i] === CLOSE_BRACE) return members;
    if (raw[i] !== COMMA) return undefined;
    i = skipSpace(raw, i + 1);
  }
}

/** The elements of the JSON array starting at `at`, one at a time (the array is not copied). */
export function* arrayElements(raw: Buffer, at: number): Generator<Span> {
  let i = skipSpace(raw, at);
  if (raw[i] !== OPEN_BRACKET) return;
  i = skipSpace(raw, i + 1);
  if (raw[i] === CLOSE_BRACKET) return;
  for (;;) {
    const end = valueEnd(raw, i);
    if (end < 0) return;
    yield { start: i, end: trimEnd(raw, end) };
    i = skipSpace(raw, end);
    if (raw[i] !== COMMA) return;
    i = skipSpace(raw, i + 1);
  }
}

/** Where and why `raw` is not JSON. */
export interface JsonSyntaxError {
  at: number;
  message: string;
}

const ESCAPES = new Set([QUOTE, BACKSLASH, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);
const isDigit = (byte: number | undefined) => byte !== undefined && byte >= ZERO && byte <= NINE;
const isHex = (byte: number | undefined) =>
  byte !== undefined &&
  ((byte >= ZERO && byte <= NINE) ||
    (byte >= 0x41 && byte <= 0x46) ||
    (byte >= 0x61 && byte <= 0x66));

/** The index after the valid string starting at `at`, or the (negated, minus one) index of its first fault. */
function scanString(raw: Buffer, at: number): number {
  let i = at + 1;
  for (;;) {
    const byte = raw[i];
    if (byte === undefined) return -1 - i;
    if (byte === QUOTE) return i + 1;
    if (byte === BACKSLASH) {
      const next = raw[i + 1];
      if (next === 0x75) {
        for (let k = 2; k < 6; k++) if (!isHex(raw[i + k])) return -1 - (i + k);
        i += 6;
      } else if (next !== undefined && ESCAPES.has(next)) i += 2;
      else return -1 - (i + 1);
    } else if (byte < 0x20) return -1 - i;
    else i++;
  }
}

/** The index after the valid number starting at `at`, or the (negated, minus one) index of its fault. */
function scanNumber(raw: Buffer, at: number): number {
  let i = at;
  if (raw[i] === MINUS) i++;
  if (raw[i] === ZERO) i++;
  else if (isDigit(raw[i])) while (isDigit(raw[i])) i++;
  else return -1 - i;
  if (raw[i] === DOT) {
    i++;
    if (!isDigit(raw[i])) return -1 - i;
    while (isDigit(raw[i])) i++;
  }
  if (raw[i] === 0x65 || raw[i] === 0x45) {
    i++;
    if (raw[i] === PLUS || raw[i] === MINUS) i++;
    if (!isDigit(raw[i])) return -1 - i;
    while (isDigit(raw[i])) i++;
  }
  return i;
}

const LITERALS: Record<number, Buffer> = {
  0x74: Buffer.from('true'),
  0x66: Buffer.from('false'),
  0x6e: Buffer.from('null'),
};

function describe(raw: Buffer, at: number): string {
  const byte = raw[at];
  if (byte === undefined) return `Unexpected end of JSON input at position ${at}`;
  const shown =
    byte >= 0x20 && byte < 0x7f
      ? `'${String.fromCharCode(byte)}'`
      : `byte 0x${byte.toString(16).padStart(2, '0')}`;
  return `Unexpected ${shown} at position ${at}`;
}

/**
 * Why `raw` is not one JSON value (RFC 8259), or undefined if it is. Reads the bytes in
 * place, with no string made and no recursion (any depth of nesting); UTF-8 is not checked
 * (the text would decode invalid sequences to U+FFFD, as `JSON.parse(raw.toString())` does).
 */
export function jsonSyntaxError(raw: Buffer): JsonSyntaxError | undefined {
  const fault = (at: number): JsonSyntaxError => ({ at, message: describe(raw, at) });
  // Open containers, innermost last: true for an object.
  const open: boolean[] = [];
  let i = skipSpace(raw, 0);
  for (;;) {
    // A value starts at i.
    const byte = raw[i];
    if (byte === OPEN_BRACE || byte === OPEN_BRACKET) {
      i = skipSpace(raw, i + 1);
      if (raw[i] === (byte === OPEN_BRACE ? CLOSE_BRACE : CLOSE_BRACKET)) i++;
      else {
        open.push(byte === OPEN_BRACE);
        if (byte === OPEN_BRACE) {
          const key = memberName(raw, i);
          if (key < 0) return fault(-1 - key);
          i = key;
        }
        continue;
      }
    } else if (byte === QUOTE) {
      const end = scanString(raw, i);
      if (end < 0) return fault(-1 - end);
      i = end;
    } else if (byte === MINUS || isDigit(byte)) {
      const end = scanNumber(raw, i);
      if (end < 0) return fault(-1 - end);
      i = end;
    } else {
      const literal = byte === undefined ? undefined : LITERALS[byte];
      if (literal === undefined) return fault(i);
      for (let k = 1; k < literal.length; k++) if (raw[i + k] !== literal[k]) return fault(i + k);
      i += literal.length;
    }
    // A value ended before i: close what it ends, then expect the next member or element.
    for (;;) {
      i = skipSpace(raw, i);
      if (open.length === 0) return i === raw.length ? undefined : fault(i);
      const inObject = open.at(-1)!;
      if (raw[i] === COMMA) {
        i = skipSpace(raw, i + 1);
        if (inObject) {
          const key = memberName(raw, i);
          if (key < 0) return fault(-1 - key);
          i = key;
        }
        break;
      }
      if (raw[i] !== (inObject ? CLOSE_BRACE : CLOSE_BRACKET)) return fault(i);
      open.pop();
      i++;
    }
  }
}

/** After a member's name and colon (the value's start), or the (negated, minus one) index of the fault. */
function memberName(raw: Buffer, at: number): number {
  if (raw[at] !== QUOTE) return -1 - at;
  const end = scanString(raw, at);
  if (end < 0) return end;
  const colon = skipSpace(raw, end);
  if (raw[colon] !== COLON) return -1 - colon;
  return skipSpace(raw, colon + 1);
}
