/**
 * The engine's common event, read without `JSON.parse` (pure). Almost every event of a
 * stream is one token's chunk of one fixed shape: one choice, a text (completions) or a
 * delta with one text field (chat), `logprobs` and `finish_reason` null, and the token's
 * ids. Parsing each whole cost the relay as much CPU per chunk as everything else it adds
 * to a relayed chunk; this reads that shape in one pass over the characters, checking the
 * JSON's syntax as it goes, and answers `undefined` for anything else (the first event with
 * the prompt's ids, a role, tool calls, logprobs, the finish, usage, an error, escapes in a
 * key, a syntax error), which the caller then parses whole. Members it does not need are
 * skipped, checked but not read.
 */
import {
  BACKSLASH,
  CLOSE_BRACE,
  CLOSE_BRACKET,
  COLON,
  COMMA,
  DOT,
  MINUS,
  NINE,
  OPEN_BRACE,
  OPEN_BRACKET,
  PLUS,
  QUOTE,
  ZERO,
} from '../json-scan.js';

/** What a relay needs of a token chunk. */
export interface TokenEvent {
  /** The choice's `token_ids` (empty when null or absent). */
  ids: number[];
  /**
   * The generated text: `text` (completions), or the delta's one text field (chat);
   * undefined without one.
   */
  text: string | undefined;
  /** The field of the text: `text`, or the delta's `content`, `reasoning`, `reasoning_content`. */
  field: TextField;
  /** Where the `token_ids` array is, `[` to after `]` (-1 when the event has none). */
  idsStart: number;
  idsEnd: number;
}

export type TextField = 'text' | 'content' | 'reasoning' | 'reasoning_content';

/** A shape this reader does not take: the event is parsed whole instead. */
const OTHER = -1;

/** The index after the escape at `at` (its backslash); OTHER if JSON has no such escape. */
function escapeEnd(json: string, at: number): number {
  const c = json.charCodeAt(at + 1);
  // `"`, `\`, `/`, b, f, n, r, t
  if (c === 0x22 || c === 0x5c || c === 0x2f || c === 0x62 || c === 0x66) return at + 2;
  if (c === 0x6e || c === 0x72 || c === 0x74) return at + 2;
  if (c !== 0x75) return OTHER;
  return /^[0-9a-fA-F]{4}$/.test(json.slice(at + 2, at + 6)) ? at + 6 : OTHER;
}

/** Reads one event; its state is the cursor and what was found. */
class Reader {
  at = 0;
  ids: number[] = [];
  idsStart = -1;
  idsEnd = -1;
  text: string | undefined;
  field: TextField = 'text';
  choices = 0;

  constructor(
    readonly json: string,
    readonly chat: boolean,
  ) {}

  space(): void {
    const { json } = this;
    let c = json.charCodeAt(this.at);
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = json.charCodeAt(++this.at);
  }

  /** Expect `code` (after whitespace); false if another character is there. */
  eat(code: number): boolean {
    this.space();
    if (this.json.charCodeAt(this.at) !== code) return false;
    this.at++;
    return true;
  }

  /**
   * A string at the cursor: its end (after the closing quote), and whether it holds a
   * backslash; -1 for no string or a control character in it (invalid JSON).
   */
  stringEnd(): number {
    const { json } = this;
    let i = this.at + 1;
    for (;;) {
      const c = json.charCodeAt(i);
      if (c === QUOTE) return i + 1;
      if (c === BACKSLASH) {
        i = escapeEnd(json, i);
        if (i === OTHER) return OTHER;
      } else if (c < 0x20 || Number.isNaN(c)) return OTHER;
      else i++;
    }
  }

  /** A string's value, escapes decoded; undefined if there is no valid string at the cursor. */
  string(): string | undefined {
    this.space();
    if (this.json.charCodeAt(this.at) !== QUOTE) return undefined;
    const start = this.at;
    const end = this.stringEnd();
    if (end === OTHER) return undefined;
    this.at = end;
    const inner = this.json.slice(start + 1, end - 1);
    if (!inner.includes('\\')) return inner;
    try {
      return JSON.parse(this.json.slice(start, end)) as string;
    } catch {
      return undefined;
    }
  }

  /** A key without escapes, and its colon; undefined otherwise. */
  key(): string | undefined {
    this.space();
    const { json } = this;
    if (json.charCodeAt(this.at) !== QUOTE) return undefined;
    let end = this.at + 1;
    for (let c = json.charCodeAt(end); c !== QUOTE; c = json.charCodeAt(++end)) {
      if (c === BACKSLASH || c < 0x20 || Number.isNaN(c)) return undefined;
    }
    const key = json.slice(this.at + 1, end);
    this.at = end + 1;
    return this.eat(COLON) ? key : undefined;
  }

  /** `null` at the cursor. */
  null(): boolean {
    this.space();
    if (!this.json.startsWith('null', this.at)) return false;
    this.at += 4;
    return true;
  }

  /** Skip any JSON value, checking its syntax; false if it is not one. */
  skip(): boolean {
    this.space();
    const { json } = this;
    const c = json.charCodeAt(this.at);
    if (c === QUOTE) {
      const end = this.stringEnd();
      if (end === OTHER) return false;
      this.at = end;
      return true;
    }
    if (c === OPEN_BRACE) return this.members(Members.Skipped);
    if (c === OPEN_BRACKET) {
      this.at++;
      if (this.eat(CLOSE_BRACKET)) return true;
      do {
        if (!this.skip()) return false;
      } while (this.eat(COMMA));
      return this.eat(CLOSE_BRACKET);
    }
    if (json.startsWith('null', this.at) || json.startsWith('true', this.at)) {
      this.at += 4;
      return true;
    }
    if (json.startsWith('false', this.at)) {
      this.at += 5;
      return true;
    }
    return this.number();
  }

  /** Digits at the cursor: how many. */
  digits(): number {
    const { json } = this;
    const start = this.at;
    let c = json.charCodeAt(this.at);
    while (c >= ZERO && c <= NINE) c = json.charCodeAt(++this.at);
    return this.at - start;
  }

  /** A JSON number, by its grammar; false if none is at the cursor. */
  number(): boolean {
    const { json } = this;
    if (json.charCodeAt(this.at) === MINUS) this.at++;
    const first = json.charCodeAt(this.at);
    const whole = this.digits();
    if (whole === 0 || (whole > 1 && first === ZERO)) return false;
    if (json.charCodeAt(this.at) === DOT) {
      this.at++;
      if (this.digits() === 0) return false;
    }
    const e = json.charCodeAt(this.at);
    if (e === 0x65 || e === 0x45) {
      this.at++;
      const sign = json.charCodeAt(this.at);
      if (sign === PLUS || sign === MINUS) this.at++;
      if (this.digits() === 0) return false;
    }
    return true;
  }

  /** The choice's `token_ids`: an array of non-negative integers, or null. */
  tokenIds(): boolean {
    if (this.null()) return true;
    if (this.json.charCodeAt(this.at) !== OPEN_BRACKET) return false;
    this.idsStart = this.at;
    this.at++;
    if (!this.eat(CLOSE_BRACKET)) {
      const { json } = this;
      do {
        this.space();
        const start = this.at;
        const digits = this.digits();
        // Also a leading zero, a fraction, a sign or an exponent: not a token id as an
        // engine writes one.
        if (digits === 0 || digits > 15 || (digits > 1 && json.charCodeAt(start) === ZERO)) {
          return false;
        }
        this.ids.push(Number(json.slice(start, this.at)));
      } while (this.eat(COMMA));
      if (!this.eat(CLOSE_BRACKET)) return false;
    }
    this.idsEnd = this.at;
    return true;
  }

  /**
   * An object, each member's value read as `which` says; false if it is not an object of
   * that shape (an empty one is only a delta).
   */
  members(which: Members): boolean {
    if (!this.eat(OPEN_BRACE)) return false;
    if (this.eat(CLOSE_BRACE)) return which === Members.Delta || which === Members.Skipped;
    do {
      const key = this.key();
      if (key === undefined) return false;
      let ok: boolean;
      switch (which) {
        case Members.Event:
          ok = this.eventMember(key);
          break;
        case Members.Choice:
          ok = this.choiceMember(key);
          break;
        case Members.Delta:
          ok = this.deltaMember(key);
          break;
        default:
          // Ids anywhere else are read whole (the relay nulls every one the client did not
          // ask for).
          ok = !key.endsWith('token_ids') && this.skip();
      }
      if (!ok) return false;
    } while (this.eat(COMMA));
    return this.eat(CLOSE_BRACE);
  }

  /** A member of a chat delta: at most one text field, and nothing else. */
  deltaMember(key: string): boolean {
    if (key !== 'content' && key !== 'reasoning' && key !== 'reasoning_content') return false;
    if (this.null()) return true;
    if (this.text !== undefined) return false;
    this.text = this.string();
    this.field = key;
    return this.text !== undefined;
  }

  /** A member of the one choice. */
  choiceMember(key: string): boolean {
    switch (key) {
      case 'delta':
        return this.chat && this.members(Members.Delta);
      case 'text':
        this.text = this.chat ? undefined : this.string();
        return this.text !== undefined;
      case 'token_ids':
        return this.idsStart < 0 && this.tokenIds();
      // The finish, logprobs and the prompt's ids are read whole.
      case 'finish_reason':
      case 'logprobs':
      case 'prompt_token_ids':
      case 'stop_reason':
        return this.null();
      default:
        return this.skip();
    }
  }

  /** A member of the event. */
  eventMember(key: string): boolean {
    switch (key) {
      case 'choices':
        this.choices++;
        return this.eat(OPEN_BRACKET) && this.members(Members.Choice) && this.eat(CLOSE_BRACKET);
      case 'error':
        return false;
      case 'usage':
      case 'prompt_token_ids':
        return this.null();
      default:
        return this.skip();
    }
  }

  /** The whole event: an object with one choice, and nothing after it. */
  event(): boolean {
    if (!this.members(Members.Event)) return false;
    this.space();
    return this.at === this.json.length && this.choices === 1;
  }
}

/** How {@link Reader.members} reads an object's members. */
const enum Members {
  Event,
  Choice,
  Delta,
  Skipped,
}

/**
 * Read one event's JSON as a token chunk of a chat (`chat`) or completions stream;
 * `undefined` when it is of another shape (or not valid JSON): parse it whole then.
 */
export function readTokenEvent(json: string, chat: boolean): TokenEvent | undefined {
  const reader = new Reader(json, chat);
  if (!reader.event()) return undefined;
  const { ids, idsStart, idsEnd, field } = reader;
  return { ids, text: reader.text, field, idsStart, idsEnd };
}
