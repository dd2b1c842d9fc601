/**
 * The prompt of a large body, left as the client's bytes. Parsing a 30 MB prompt makes a
 * 30 MB string of the text and another of the prompt, both in V8's large-object space,
 * which is freed only by a full collection: eight such uploads one after another grew the
 * scheduler by 188–259 MB although the body budget let one in at a time. The proxy needs
 * only a few facts about a prompt (its shape, its first characters for prefix affinity),
 * and the engine gets the client's bytes anyway: those facts are read in place.
 */
import { BACKSLASH, QUOTE, arrayElements, objectMembers, skipSpace } from './json-scan.js';
import type { MemberSpan, Span } from './json-scan.js';

/** Values of a large body's prompt members up to this size are parsed; larger ones stay bytes. */
export const RAW_VALUE_BYTES = 64 * 1024;

/** A JSON value (already checked) kept as bytes: `raw[start, end)`. */
export class RawJson {
  /** The members of an object value, found at the first `member` call. */
  #members: MemberSpan[] | undefined;

  constructor(
    readonly raw: Buffer,
    readonly start: number,
    readonly end: number,
  ) {}

  get kind(): 'string' | 'array' | 'object' | 'scalar' {
    const first = this.raw[this.start];
    if (first === QUOTE) return 'string';
    if (first === 0x5b) return 'array';
    if (first === 0x7b) return 'object';
    return 'scalar';
  }

  /** The first `maxChars` UTF-16 code units of a string value (`''` for other kinds). */
  head(maxChars: number): string {
    if (this.kind !== 'string') return '';
    const last = this.end - 1;
    // At most 6 bytes (`\uXXXX`) make one code unit: this many hold `maxChars` and more.
    const take = Math.min(last, this.start + 1 + 6 * maxChars + 32);
    // Cut where no escape is split.
    let i = this.start + 1;
    let cut = i;
    while (i < take) {
      if (this.raw[i] === BACKSLASH) {
        const length = this.raw[i + 1] === 0x75 ? 6 : 2;
        if (i + length > take) break;
        i += length;
      } else i++;
      cut = i;
    }
    // A character split at the cut decodes to U+FFFD past `maxChars` units: sliced away.
    const text = JSON.parse(`"${this.raw.toString('utf8', this.start + 1, cut)}"`) as string;
    return text.slice(0, maxChars);
  }

  /** The elements of an array value, each parsed when small (nothing for other kinds). */
  *items(): Generator<unknown> {
    if (this.kind !== 'array') return;
    for (const span of arrayElements(this.raw, this.start)) yield valueAt(this.raw, span);
  }

  /** The value of an object's member (the last of that name, as `JSON.parse` keeps). */
  member(name: string): unknown {
    if (this.kind !== 'object') return undefined;
    // Scanned once per value: promptPrefix asks a large message for `role`, then `content`.
    const members = (this.#members ??= objectMembers(this.raw, this.start) ?? []);
    for (let k = members.length - 1; k >= 0; k--) {
      const span = members[k]!;
      if (span.name === name) return valueAt(this.raw, { start: span.valueStart, end: span.end });
    }
    return undefined;
  }

  /**
   * One prompt, as the completions endpoint takes it: a string, a list of one string, or
   * one list of token ids (integers).
   */
  isSinglePrompt(): boolean {
    const kind = this.kind;
    if (kind === 'string') return true;
    if (kind !== 'array') return false;
    const first = skipSpace(this.raw, this.start + 1);
    if (this.raw[first] === QUOTE) {
      let count = 0;
      for (const span of arrayElements(this.raw, this.start)) {
        if (++count > 1 || this.raw[span.start] !== QUOTE) return false;
      }
      return count === 1;
    }
    // A list of integers: digits, minus signs, commas and spaces only (checked JSON).
    let digits = false;
    for (let i = first; i < this.end - 1; i++) {
      const byte = this.raw[i]!;
      if (byte >= 0x30 && byte <= 0x39) digits = true;
      else if (
        byte !== 0x2c &&
        byte !== 0x2d &&
        byte !== 0x20 &&
        byte !== 0x0a &&
        byte !== 0x0d &&
        byte !== 0x09
      ) {
        // Fractions or exponents: integers only if each element is one (`1.0`, `1e3`).
        return [...this.items()].every((item) => Number.isInteger(item));
      }
    }
    return digits;
  }
}

/** The value at `span` of checked JSON: parsed when at most {@link RAW_VALUE_BYTES}, else raw. */
export function valueAt(raw: Buffer, span: Span): unknown {
  if (span.end - span.start > RAW_VALUE_BYTES) return new RawJson(raw, span.start, span.end);
  return JSON.parse(raw.toString('utf8', span.start, span.end));
}

/** The elements of an array, parsed or raw; undefined when `value` is not an array. */
export function itemsOf(value: unknown): Iterable<unknown> | undefined {
  if (Array.isArray(value)) return value as unknown[];
  if (value instanceof RawJson && value.kind === 'array') return value.items();
  return undefined;
}

/** A member of an object, parsed or raw; undefined when `value` is not an object. */
export function memberOf(value: unknown, name: string): unknown {
  if (value instanceof RawJson) return value.member(name);
  if (typeof value === 'object' && value !== null && !Array.isArray(value))
    return (value as Record<string, unknown>)[name];
  return undefined;
}

/** The first `maxChars` characters of a string, parsed or raw; undefined for other values. */
export function textOf(value: unknown, maxChars: number): string | undefined {
  if (typeof value === 'string') return value.slice(0, maxChars);
  if (value instanceof RawJson && value.kind === 'string') return value.head(maxChars);
  return undefined;
}

/** A JSON object, parsed or raw. */
export function isObject(value: unknown): boolean {
  if (value instanceof RawJson) return value.kind === 'object';
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
