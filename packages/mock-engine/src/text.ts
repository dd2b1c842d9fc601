import type { CompiledRule } from './options.js';

/** What the engine will emit for one request: its tokens and why it stopped. */
export interface GenerationPlan {
  tokens: string[];
  finishReason: 'stop' | 'length';
  /** The stop string that ended generation (vLLM's `stop_reason`), else null. */
  stopReason: string | null;
}

const FILLER = (
  'the quick brown fox jumps over a lazy dog while elastic nodes come and go ' +
  'serving tokens to patient clients across the cluster'
).split(' ');

/** Split text into "tokens": each word with its leading whitespace, so joining restores it. */
export function tokenize(text: string): string[] {
  return text.match(/\s*\S+|\s+/g) ?? [];
}

/** A cheap deterministic token count for prompts (words, at least 1). */
export function countTokens(text: string): number {
  return Math.max(1, text.match(/\S+/g)?.length ?? 0);
}

/** FNV-1a: a stable 32-bit hash, so the same prompt always yields the same filler. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function filler(prompt: string, count: number): string[] {
  const start = hash32(prompt) % FILLER.length;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const word = FILLER[(start + i) % FILLER.length] ?? 'token';
    out.push(i === 0 ? word : ` ${word}`);
  }
  return out;
}

/**
 * Decide the output for a prompt: the first matching script rule (else filler of
 * `maxTokens` tokens), cut at `maxTokens`, then cut before the first stop string (vLLM's
 * default: the stop string itself is not included).
 */
export function planGeneration(
  prompt: string,
  maxTokens: number,
  stop: string[],
  script: CompiledRule[],
): GenerationPlan {
  const rule = script.find((r) => r.match === undefined || r.match.test(prompt));
  let tokens = rule ? tokenize(rule.response) : filler(prompt, maxTokens);
  let finishReason: 'stop' | 'length' = rule ? rule.finishReason : 'length';
  if (tokens.length > maxTokens) {
    tokens = tokens.slice(0, maxTokens);
    finishReason = 'length';
  }
  const text = tokens.join('');
  let cut = -1;
  let stopReason: string | null = null;
  for (const s of stop) {
    if (s.length === 0) continue;
    const at = text.indexOf(s);
    if (at !== -1 && (cut === -1 || at < cut)) {
      cut = at;
      stopReason = s;
    }
  }
  if (cut === -1) return { tokens, finishReason, stopReason: null };
  const kept: string[] = [];
  let length = 0;
  for (const token of tokens) {
    if (length + token.length <= cut) {
      kept.push(token);
      length += token.length;
    } else {
      if (cut > length) kept.push(token.slice(0, cut - length));
      break;
    }
  }
  return { tokens: kept, finishReason: 'stop', stopReason };
}

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
