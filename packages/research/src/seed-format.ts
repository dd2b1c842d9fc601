/**
 * `--format seed`: the original tool's output, so pipelines built on its JSONL keep working.
 * One object per question in `<output-dir>/trajectories_<dataset>.jsonl`, with its field
 * names (`qid`, `reasoning_content`, `num_rounds`, `answer_ref`, `latency_s`, ...).
 */
import { basename, extname } from 'node:path';
import type { DatasetItem } from './dataset.js';
import { parseToolArguments } from './harmony.js';
import type { Trajectory } from './trajectory.js';

/** A message of a seed record, in the original's chat format. */
export type SeedMessage =
  | { role: 'system' | 'developer' | 'user'; content: string }
  | {
      role: 'assistant';
      content: string;
      /** The analysis that preceded this message, when there was any. */
      reasoning_content?: string;
      tool_calls?: {
        id: string;
        type: 'function';
        function: { name: string; arguments: string };
      }[];
    }
  | { role: 'tool'; tool_call_id: string; content: string };

/** One line of a seed-format output file. */
export interface SeedRecord {
  /** The dataset's id as written (a number stays a number). */
  qid: string | number;
  question: string;
  messages: SeedMessage[];
  /** The final answer; `""` without one. */
  answer: string;
  /** The analysis before the final answer; `""` without one. */
  reasoning: string;
  /** The dataset's reference answer; `""` without one. */
  answer_ref: string;
  /** Completion rounds (a forced final answer belongs to its round). */
  num_rounds: number;
  num_tool_calls: number;
  /** Every tool call: its round, the tool, its arguments and the result's length in characters. */
  tool_calls: { round: number; tool: string; args: unknown; result_len: number }[];
  latency_s: number;
  /** `success` with a final answer, else `error` (the question runs again next time). */
  status: 'success' | 'error';
  /** Why there is no answer (`status: "error"` only). */
  error?: string;
}

/**
 * The seed output file's name for a dataset: `trajectories_sample.jsonl`, or, for a file,
 * its name without directory and extension (`data/q.jsonl` -> `trajectories_q.jsonl`). Pure.
 */
export function seedOutputName(dataset: string): string {
  const name = dataset === 'sample' ? dataset : basename(dataset, extname(dataset));
  return `trajectories_${name}.jsonl`;
}

/**
 * Converts a trajectory into the original tool's record. Pure.
 *
 * @example
 * ```ts
 * writer.write(toSeedRecord(trajectory, item));
 * ```
 */
export function toSeedRecord(trajectory: Trajectory, item: DatasetItem): SeedRecord {
  const messages: SeedMessage[] = trajectory.messages.map((m): SeedMessage => {
    if (m.role === 'tool') {
      return { role: 'tool', tool_call_id: m.tool_call_id ?? '', content: m.content };
    }
    if (m.role === 'assistant') {
      const message: Extract<SeedMessage, { role: 'assistant' }> = {
        role: 'assistant',
        content: m.content,
      };
      if (m.thinking) message.reasoning_content = m.thinking;
      if (m.tool_calls) {
        message.tool_calls = m.tool_calls.map((c) => ({
          id: c.id,
          type: 'function',
          function: { name: c.function.name, arguments: c.function.arguments },
        }));
      }
      return message;
    }
    return { role: m.role, content: m.content };
  });

  // The k-th tool call was made in the k-th turn that ran a tool; its result follows it.
  const toolTurns = trajectory.turns.filter((t) => t.tool !== undefined);
  const results = new Map(
    trajectory.messages
      .filter((m) => m.role === 'tool')
      .map((m) => [m.tool_call_id ?? '', m.content]),
  );
  const calls = trajectory.messages.flatMap((m) => m.tool_calls ?? []);
  const toolCalls = calls.map((call, index) => {
    const args = parseToolArguments(call.function.arguments);
    return {
      round: toolTurns[index]?.turn ?? index + 1,
      tool: call.function.name,
      args: args.ok ? args.value : call.function.arguments,
      result_len: codePoints(results.get(call.id) ?? ''),
    };
  });

  const last = trajectory.messages.at(-1);
  const final = trajectory.answer !== null && last?.role === 'assistant' ? last : undefined;
  const rounds = Math.max(
    0,
    ...trajectory.turns.map((t) => t.turn),
    ...trajectory.errors.map((e) => e.turn),
  );
  const record: SeedRecord = {
    qid: item.sourceId ?? item.id,
    question: trajectory.question,
    messages,
    answer: trajectory.answer ?? '',
    reasoning: final?.thinking ?? '',
    answer_ref: item.reference ?? '',
    num_rounds: rounds,
    num_tool_calls: trajectory.toolCalls,
    tool_calls: toolCalls,
    latency_s: trajectory.timings.totalMs / 1000,
    status: trajectory.status === 'completed' ? 'success' : 'error',
  };
  if (record.status === 'error') {
    const why = trajectory.errors.at(-1);
    record.error = `${trajectory.status}: ${why?.message ?? 'no final answer'}`;
  }
  return record;
}

/** Python's `len` of a string (code points), as the original measured results. */
function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}
