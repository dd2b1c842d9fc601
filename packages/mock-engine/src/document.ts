/**
 * Structured answers: with an output format, a chat answer is a fixed-shape document (the
 * reasoning, the content or a tool call, in the format's markers) drawn from the
 * conversation, written token by token so that a continuation still works: the next token
 * is a pure function of the ids so far, like any other.
 *
 * The conversation is the prompt's ids up to and including the LAST `<|assistant|>` and the
 * `\n` after it (the chat template ends with them; a structured answer never writes
 * `<|assistant|>`). The document is a pure function of that prefix: its words are drawn by
 * the prefix's hash, its tool call names the first tool the prompt offers. The ids after the
 * prefix (generated ones, or a continuation prompt's) are the answer so far; the next id:
 *
 * 1. while they are the document's ids, its next id (the document is encoded segment by
 *    segment, so no token spans reasoning and content, content and a marker, ...);
 * 2. else, while their bytes start the document's bytes (someone tokenized its text
 *    differently: byte by byte, or with the engine's `merges`), the first id of the rest of
 *    the current segment's text, encoded (a byte of the character the ids end inside first);
 * 3. else the plain generation's next token (`nextToken`), as without a format.
 *
 * When the answer so far is the whole document there is no next id: generation stops.
 */
import { firstOfferedTool } from './chat-template.js';
import type { OfferedTool } from './chat-template.js';
import type { ResolvedFormat } from './output-format.js';
import {
  BYTE_WORDS,
  INITIAL_STATE,
  WORDS,
  absorb,
  decode,
  encode,
  mix,
  tokenBytes,
} from './tokenizer.js';

/** What a piece of the document is to the chat endpoint's parsers. */
export type Role = 'reasoning' | 'content' | 'arguments' | 'markup';

/** One part of a document: its text, and what the parsers make of it. */
interface Segment {
  text: string;
  role: Role;
  /** The segment ends a tool call's header: the call's name is known once it is written. */
  call?: true;
}

/** A structured answer, as {@link openDocument} finds it for a prompt. */
export interface Document {
  /**
   * The document's ids: each segment's text encoded on its own, so no id spans two; never
   * merged (generation writes unmerged ids, whatever the engine's `merges`).
   */
  ids: number[];
  /** The document's text as UTF-8. */
  bytes: Uint8Array;
  /** The segments in order: where each ends in `bytes`, its role, whether it ends the call's header. */
  segments: { end: number; role: Role; call: boolean }[];
  /** The tool called (its name), when the format parses tool calls and the prompt has one. */
  call: string | undefined;
  /** How the document's last id ends generation: an end-of-sequence token (Harmony) or not. */
  end: 'eos' | 'stop-token' | 'last';
}

/** One step of the answer: the id, its role, whether it completes the call's header or the document. */
export interface DocumentStep {
  id: number;
  role: Role;
  /** This id completes the tool call's header (its name is known). */
  call: boolean;
  /** This id is the document's last. */
  last: boolean;
}

const ASSISTANT = encode('<|assistant|>')[0]!;
const utf8 = new TextEncoder();
const NEWLINE = 0x0a;
/** What a word is drawn from: the vocabulary's words, then the byte-by-byte ones. */
const DRAWN: readonly string[] = [...WORDS, ...BYTE_WORDS];

/** Each drawn word's token count, bare and after a space. */
const WORD_TOKENS = DRAWN.map((word) => [encode(word).length, encode(` ${word}`).length] as const);

/**
 * Words (bare first, then spaced) drawn by `hash` and `salt` until they make `budget`
 * tokens (at least one word); the second one is always a byte-by-byte word, so most
 * documents have multi-byte characters.
 */
function words(hash: number, salt: number, budget: number): string {
  const out: string[] = [];
  for (let tokens = 0; tokens < budget || out.length === 0;) {
    const h = mix(hash, salt + out.length + 1);
    const pick = out.length === 1 ? WORDS.length + (h % BYTE_WORDS.length) : h % DRAWN.length;
    out.push(DRAWN[pick]!);
    tokens += WORD_TOKENS[pick]![out.length === 1 ? 0 : 1];
  }
  return out.join(' ');
}

/** A Hermes `<tool_call>` (as Qwen3 and Hermes write it, JSON as Python's json.dumps). */
function hermesCall(tool: OfferedTool, argsText: string, parsed: boolean): Segment[] {
  const role = (r: Role): Role => (parsed ? r : 'content');
  const args = `{${JSON.stringify(tool.parameter)}: ${JSON.stringify(argsText)}}`;
  return [
    {
      text: `<tool_call>\n{"name": ${JSON.stringify(tool.name)}`,
      role: role('markup'),
      ...(parsed ? { call: true as const } : {}),
    },
    { text: ', "arguments": ', role: role('markup') },
    { text: args, role: role('arguments') },
    { text: '}\n</tool_call>', role: role('markup') },
  ];
}

/** The free text of a document: its reasoning, its content, its tool call's argument. */
interface DocumentText {
  reasoning: string;
  content: string;
  argument: string;
}

/** The segments of a document for `format`, calling `tool` if given, around `text`. */
function documentSegments(
  format: ResolvedFormat,
  tool: OfferedTool | undefined,
  text: DocumentText,
): Segment[] {
  const { reasoning, content, argument } = text;
  if (format.kind === 'harmony') {
    const head: Segment[] = [
      { text: '<|channel|>analysis<|message|>', role: 'markup' },
      { text: reasoning, role: 'reasoning' },
    ];
    if (tool === undefined) {
      return [
        ...head,
        { text: '<|end|><|start|>assistant<|channel|>final<|message|>', role: 'markup' },
        { text: content, role: 'content' },
        { text: '<|return|>', role: 'markup' },
      ];
    }
    const header = `<|end|><|start|>assistant<|channel|>commentary to=functions.${tool.name} <|constrain|>json<|message|>`;
    return [
      ...head,
      { text: header, role: 'markup', call: true },
      {
        text: `{${JSON.stringify(tool.parameter)}:${JSON.stringify(argument)}}`,
        role: 'arguments',
      },
      { text: '<|call|>', role: 'markup' },
    ];
  }
  const think: Segment[] = format.think
    ? [
        { text: '<think>', role: 'markup' },
        { text: `\n${reasoning}\n`, role: 'reasoning' },
        { text: '</think>', role: 'markup' },
      ]
    : [];
  // A <think> model answers after a blank line; the text after </think> is content as written.
  const lead = format.think ? '\n\n' : '';
  if (tool === undefined) return [...think, { text: lead + content, role: 'content' }];
  return [
    ...think,
    ...(lead === '' ? [] : [{ text: lead, role: 'content' as const }]),
    ...hermesCall(tool, argument, format.hermes),
  ];
}

/**
 * The document's segments, its words drawn by `hash`: a length drawn in 30 .. 80 tokens
 * (more when the markup alone is longer), the markup's tokens counted, the rest shared by
 * the reasoning (3 parts) and the content or the tool call's argument (2 parts).
 */
function drawSegments(
  format: ResolvedFormat,
  hash: number,
  tool: OfferedTool | undefined,
): Segment[] {
  const markup = documentSegments(format, tool, { reasoning: '', content: '', argument: '' });
  const markupTokens = markup.reduce((n, s) => n + encode(s.text).length, 0);
  const budget = Math.max(0, 30 + (mix(hash, 0x400) % 51) - markupTokens);
  const reasons = format.kind === 'harmony' || format.think;
  const reasoningBudget = reasons ? Math.round((budget * 3) / 5) : 0;
  const rest = budget - reasoningBudget;
  return documentSegments(format, tool, {
    reasoning: words(hash, 0x100, reasoningBudget),
    content: words(hash, 0x200, rest),
    argument: words(hash, 0x300, rest),
  });
}

/** The index of the `n`-th (1-based) `id` in `ids`, else -1. */
function nthIndexOf(ids: readonly number[], id: number, n: number): number {
  let seen = 0;
  for (let i = 0; i < ids.length; i++) if (ids[i] === id && ++seen === n) return i;
  return -1;
}

/** The document answering a conversation `prefix` (which ends with `<|assistant|>\n`). */
export function buildDocument(prefix: readonly number[], format: ResolvedFormat): Document {
  const hash = prefix.reduce(absorb, INITIAL_STATE);
  // The tools block is the prompt's first three lines and more: its first tool is on the third.
  const third = nthIndexOf(prefix, NEWLINE, 3);
  const tool = firstOfferedTool(decode(third === -1 ? [] : prefix.slice(0, third + 1)));
  const segments = drawSegments(format, hash, tool);
  let end = 0;
  const ranges = segments.map((s) => {
    end += utf8.encode(s.text).length;
    return { end, role: s.role, call: s.call ?? false };
  });
  const lastText = segments.at(-1)?.text;
  return {
    ids: segments.flatMap((s) => encode(s.text)),
    bytes: utf8.encode(segments.map((s) => s.text).join('')),
    segments: ranges,
    call: segments.some((s) => s.call) ? tool?.name : undefined,
    // gpt-oss: <|return|> is the tokenizer's EOS, <|call|> a stop token of its generation config.
    end: lastText === '<|return|>' ? 'eos' : lastText === '<|call|>' ? 'stop-token' : 'last',
  };
}

/** Where an answer stands against its document (see the module's comment). */
export interface DocumentCursor {
  /** The document being written. */
  readonly document: Document;
  /** One more id of the answer. */
  push(id: number): void;
  /** The next step; `'done'` after the whole document; `'free'` once the answer left it. */
  next(): DocumentStep | 'done' | 'free';
}

/** Whether `bytes` holds `part` at `at`. */
function bytesAt(bytes: Uint8Array, at: number, part: Uint8Array): boolean {
  if (at + part.length > bytes.length) return false;
  for (let i = 0; i < part.length; i++) if (bytes[at + i] !== part[i]) return false;
  return true;
}

/**
 * The cursor of the structured answer to `promptIds`: undefined when they hold no
 * `<|assistant|>\n` (a plain completion prompt, generated as without a format). The ids
 * after the last one are the answer so far.
 */
export function openDocument(
  promptIds: readonly number[],
  format: ResolvedFormat,
): DocumentCursor | undefined {
  let cut = -1;
  for (let i = promptIds.length - 2; i >= 0; i--) {
    if (promptIds[i] === ASSISTANT && promptIds[i + 1] === NEWLINE) {
      cut = i + 2;
      break;
    }
  }
  if (cut === -1) return undefined;
  const document = buildDocument(promptIds.slice(0, cut), format);
  const { ids, bytes, segments } = document;
  let mode: 'ids' | 'text' | 'free' = 'ids';
  let matched = 0; // ids of the document written (mode 'ids')
  let written = 0; // bytes of the document written (modes 'ids' and 'text')

  const cursor: DocumentCursor = {
    document,
    push(id) {
      if (mode === 'free') return;
      const part = tokenBytes(id);
      if (mode === 'ids' && ids[matched] === id) matched++;
      else mode = 'text';
      if (bytesAt(bytes, written, part)) written += part.length;
      else mode = 'free';
    },
    next() {
      if (mode === 'free') return 'free';
      if (written === bytes.length) return 'done';
      const segment = segments.find((s) => written < s.end)!;
      const byte = bytes[written]!;
      // Else a byte inside a character (10xxxxxx) goes as it is, or the segment's rest, encoded.
      const id =
        mode === 'ids'
          ? ids[matched]!
          : (byte & 0xc0) === 0x80
            ? byte
            : encode(new TextDecoder().decode(bytes.subarray(written, segment.end)))[0]!;
      const end = written + tokenBytes(id).length;
      return {
        id,
        role: segment.role,
        call: segment.call && end === segment.end,
        last: end === bytes.length,
      };
    },
  };
  for (const id of promptIds.slice(cut)) cursor.push(id);
  return cursor;
}
