/** Research questions: the built-in sample set, JSONL/JSON files, seeded selection. */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ResearchError } from './errors.js';
import { isMissingFile, isRecord, messageOf } from './util.js';

/** One question to research. */
export interface DatasetItem {
  /**
   * Stable id: the file's `id` (or `qid`, the original tool's name for it), else a hash of
   * the question (so resuming survives reordering).
   */
  id: string;
  /** The dataset's own id as written (a number stays a number): the seed format's `qid`. */
  sourceId?: string | number;
  question: string;
  /** A reference answer from the dataset, copied to the output for later grading. */
  reference?: string;
}

/**
 * The built-in `sample` dataset: questions that need a few searches and a page or two of
 * reading to answer well.
 */
export const SAMPLE_QUESTIONS: readonly string[] = [
  'Which SLURM option makes a preempted job go back to the queue instead of being cancelled, and what happens to its job id?',
  'What is the memory bandwidth of an NVIDIA H200 GPU, and how does it compare with the H100 SXM?',
  'Who proposed the PagedAttention algorithm, and in which year and venue was it published?',
  'What are the differences between tensor parallelism and pipeline parallelism for serving large language models?',
  'Which city hosted the first modern Olympic Games, and how many nations took part?',
  'What is the current estimate of the Hubble constant from the SH0ES team, and why does it disagree with Planck?',
  'How does the Raft consensus algorithm elect a leader, and what prevents two leaders in the same term?',
  'What is the tallest mountain in Africa, and what is the most common route to its summit?',
  'Which open-weight models did OpenAI release in 2025, and under which license?',
  'How does speculative decoding speed up LLM inference, and when does it stop helping?',
  'What is the half-life of carbon-14, and how is it used to date archaeological samples?',
  'Which programming language was the first to be used for the Linux kernel besides C and assembly?',
  'What causes the aurora borealis, and why is it more frequent near solar maximum?',
  'What is the largest known prime number as of today, and how was it found?',
  'How did the James Webb Space Telescope reach its orbit at L2, and how long did the journey take?',
  'What is the difference between BF16 and FP16 number formats, and why do training runs prefer BF16?',
  'Which country has the longest coastline in the world, and how is coastline length measured?',
  'What is the Chinchilla scaling law, and how many training tokens per parameter does it recommend?',
  'How does a heat pump move heat from a cold place to a warm one, and what is its coefficient of performance?',
  'Who won the Turing Award most recently, and for what work?',
];

/**
 * Loads a dataset: `sample` (the built-in questions), a `.jsonl` file (one object per line)
 * or a `.json` file (an array, or an object with a `data`/`questions` array). Entries are
 * objects with `question` (or `prompt`, `query`, `problem`), an optional `id` (or `qid`) and an
 * optional reference `answer`; plain strings are questions.
 *
 * @example
 * ```ts
 * const items = await loadDataset('questions.jsonl');
 * ```
 */
export async function loadDataset(spec: string): Promise<DatasetItem[]> {
  if (spec === 'sample') return SAMPLE_QUESTIONS.map((question) => toItem(question, 'sample', 0));
  let text: string;
  try {
    text = await readFile(spec, 'utf8');
  } catch (error) {
    const why = isMissingFile(error) ? 'no such file' : messageOf(error);
    throw new ResearchError(
      'dataset_invalid',
      `--dataset ${spec}: ${why}; pass "sample" or a .jsonl/.json file of questions`,
      { param: 'dataset', cause: error },
    );
  }
  const entries = spec.endsWith('.jsonl') ? parseJsonl(text, spec) : parseJson(text, spec);
  const items = entries.map((entry, index) => toItem(entry, spec, index));
  if (items.length === 0) {
    throw new ResearchError('dataset_invalid', `--dataset ${spec} holds no questions`, {
      param: 'dataset',
    });
  }
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.id)) {
      throw new ResearchError(
        'dataset_invalid',
        `--dataset ${spec}: id "${item.id}" appears twice; ids must be unique to continue a run`,
        { param: 'dataset' },
      );
    }
    seen.add(item.id);
  }
  return items;
}

/**
 * Picks the questions to run: all of them in order, or (with a seed) a deterministic
 * shuffle; then the first `numSamples`. Pure.
 */
export function selectSamples(
  items: readonly DatasetItem[],
  options: { numSamples?: number; seed?: number },
): DatasetItem[] {
  const chosen = [...items];
  if (options.seed !== undefined) {
    const random = mulberry32(options.seed);
    for (let i = chosen.length - 1; i > 0; i -= 1) {
      const j = Math.floor(random() * (i + 1));
      [chosen[i], chosen[j]] = [chosen[j] as DatasetItem, chosen[i] as DatasetItem];
    }
  }
  return options.numSamples === undefined ? chosen : chosen.slice(0, options.numSamples);
}

/** A small seeded PRNG (mulberry32): reproducible shuffles without a dependency. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function parseJsonl(text: string, spec: string): unknown[] {
  const entries: unknown[] = [];
  text.split('\n').forEach((line, index) => {
    if (line.trim() === '') return;
    try {
      entries.push(JSON.parse(line));
    } catch (error) {
      throw new ResearchError(
        'dataset_invalid',
        `--dataset ${spec}, line ${index + 1}: not valid JSON (${messageOf(error)})`,
        { param: 'dataset', cause: error },
      );
    }
  });
  return entries;
}

function parseJson(text: string, spec: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ResearchError(
      'dataset_invalid',
      `--dataset ${spec}: not valid JSON (${messageOf(error)}); use a .jsonl extension for JSON Lines`,
      { param: 'dataset', cause: error },
    );
  }
  if (Array.isArray(value)) return value;
  if (isRecord(value)) {
    const list = [value.data, value.questions].find(Array.isArray);
    if (list) return list as unknown[];
  }
  throw new ResearchError(
    'dataset_invalid',
    `--dataset ${spec}: expected an array of questions (or an object with a "data" or "questions" array)`,
    { param: 'dataset' },
  );
}

const QUESTION_KEYS = ['question', 'prompt', 'query', 'problem'] as const;

function toItem(entry: unknown, spec: string, index: number): DatasetItem {
  if (typeof entry === 'string' && entry.trim() !== '') {
    return { id: idOf(entry), question: entry };
  }
  if (isRecord(entry)) {
    const question = QUESTION_KEYS.map((key) => entry[key]).find(
      (v): v is string => typeof v === 'string' && v.trim() !== '',
    );
    if (question !== undefined) {
      const raw = entry.id ?? entry.qid;
      const own = typeof raw === 'string' || typeof raw === 'number' ? raw : undefined;
      const item: DatasetItem = { id: own === undefined ? idOf(question) : String(own), question };
      if (own !== undefined) item.sourceId = own;
      const reference = entry.answer ?? entry.reference;
      if (typeof reference === 'string') item.reference = reference;
      return item;
    }
  }
  throw new ResearchError(
    'dataset_invalid',
    `--dataset ${spec}, entry ${index + 1}: expected a string or an object with "question" ` +
      `(or ${QUESTION_KEYS.slice(1).join(', ')})`,
    { param: 'dataset' },
  );
}

function idOf(question: string): string {
  return `q-${createHash('sha256').update(question.trim()).digest('hex').slice(0, 16)}`;
}
