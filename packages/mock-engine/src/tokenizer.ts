/**
 * The mock engine's tokenizer: text → pieces → token ids. Generated tokens come from a fixed
 * vocabulary (each filler word bare and with one leading space); any other piece gets a
 * stable hash-based id above the vocabulary.
 */

/** The words generated text is made of. */
const WORDS = [
  ...new Set(
    (
      'the quick brown fox jumps over a lazy dog while elastic nodes come and go ' +
      'serving tokens to patient clients across the cluster'
    ).split(' '),
  ),
];

/** Ids `0 .. VOCABULARY_SIZE - 1`: word i is id `2i` bare and id `2i + 1` as `" word"`. */
export const VOCABULARY_SIZE = 2 * WORDS.length;
const VOCABULARY = new Map(
  WORDS.flatMap((word, i) => [
    [word, 2 * i],
    [` ${word}`, 2 * i + 1],
  ]),
);
// Ids of other pieces stay below 2^30 (int32-safe, like real vocabularies).
const HASHED_IDS = 2 ** 29;

/**
 * Split text into pieces: each run of non-whitespace with at most one leading space; other
 * whitespace is a piece of its own, minus a last space that belongs to the next word. Joining
 * the pieces restores the text. (`"a  b\nc "` → `a`, ` `, ` b`, `\n`, `c`, ` `.)
 */
export function tokenize(text: string): string[] {
  return text.match(/ ?\S+|\s+(?= \S)|\s+/g) ?? [];
}

/** FNV-1a: a stable 32-bit hash of a string. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * The id of one piece: its vocabulary id, else a hash-based id above the vocabulary. A
 * hashed id is odd exactly when the piece ends with whitespace other than a space (a
 * newline, a tab), so the ids alone tell where the next word starts (see {@link nextPiece}).
 */
export function pieceId(piece: string): number {
  const known = VOCABULARY.get(piece);
  if (known !== undefined) return known;
  const breaks = /[^\S ]$/.test(piece) ? 1 : 0;
  return VOCABULARY_SIZE + 2 * (hash32(piece) % HASHED_IDS) + breaks;
}

/** Token ids of a text. */
export function encode(text: string): number[] {
  return tokenize(text).map(pieceId);
}

/** The rolling hash over a sequence of ids: O(1) per id, so generation is linear. */
export function absorb(state: number, id: number): number {
  return Math.imul(state ^ id, 0x01000193) >>> 0;
}

/** The rolling hash of no ids. */
export const INITIAL_STATE = 0x811c9dc5;

/**
 * The piece generated after a sequence whose rolling hash is `state` and whose last id is
 * `last` (undefined when empty). The word comes from the hash; it starts without a space
 * after nothing or after a line break (as a model writes after `<|assistant|>\n`), with one
 * otherwise, a space-ended prompt included: that keeps `encode(prompt + generated)` equal to
 * the prompt's ids followed by the generated ids.
 */
export function nextPiece(state: number, last: number | undefined): string {
  // murmur3's finalizer: spreads the FNV state's bits before taking a word.
  let h = state;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  const word = WORDS[h % WORDS.length] ?? 'token';
  const bare = last === undefined || (last >= VOCABULARY_SIZE && last % 2 === 1);
  return bare ? word : ` ${word}`;
}
