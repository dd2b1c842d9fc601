/** Bytes of a response's end kept to find `usage` (the last SSE chunks or the JSON tail). */
const TAIL_BYTES = 4096;

/** Token counts read from an OpenAI `usage` object. */
export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  totalTokens?: number;
}

/**
 * Keeps references to the last chunks of a response (no copying on the hot path) and reads
 * `usage` from them once the response has ended: engines put it in the final JSON fields
 * or, for streams with `include_usage`, in the last chunk before `[DONE]`.
 */
export class UsageTail {
  private chunks: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= TAIL_BYTES) {
      this.bytes -= this.chunks.shift()!.length;
    }
  }

  /** Parse `usage` out of the kept tail; `undefined` when absent. */
  read(): Usage | undefined {
    if (this.chunks.length === 0) return undefined;
    const text = Buffer.concat(this.chunks).toString('latin1');
    const at = text.lastIndexOf('"usage"');
    if (at < 0) return undefined;
    const close = text.indexOf('}', at);
    const object = text.slice(at, close < 0 ? undefined : close);
    const usage: Usage = {};
    const prompt = readNumber(object, 'prompt_tokens');
    const completion = readNumber(object, 'completion_tokens');
    const total = readNumber(object, 'total_tokens');
    if (prompt !== undefined) usage.promptTokens = prompt;
    if (completion !== undefined) usage.completionTokens = completion;
    if (total !== undefined) usage.totalTokens = total;
    return prompt === undefined && completion === undefined && total === undefined
      ? undefined
      : usage;
  }
}

function readNumber(text: string, field: string): number | undefined {
  const match = new RegExp(`"${field}"\\s*:\\s*(\\d+)`).exec(text);
  return match === null ? undefined : Number(match[1]);
}
