/** Random texts for the tokenizer's property tests: reproducible, different every draw. */

/** A seeded PRNG (mulberry32): reproducible, and different inputs every draw. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` strings of `alphabet` drawn by `next`, joined. */
export function randomText(
  next: () => number,
  alphabet: readonly string[],
  length: number,
): string {
  let text = '';
  for (let i = 0; i < length; i++) text += alphabet[Math.floor(next() * alphabet.length)];
  return text;
}
