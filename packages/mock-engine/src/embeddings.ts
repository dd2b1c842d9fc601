import { hash32 } from './tokenizer.js';

/** A deterministic unit vector for a text (embeddings). */
export function embed(text: string, dims: number): number[] {
  let state = hash32(text) || 1;
  const v: number[] = [];
  let norm = 0;
  for (let i = 0; i < dims; i++) {
    // xorshift32: fast, deterministic, good enough for fake embeddings
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    const x = state / 0xffffffff - 0.5;
    v.push(x);
    norm += x * x;
  }
  const scale = 1 / Math.sqrt(norm || 1);
  return v.map((x) => x * scale);
}
