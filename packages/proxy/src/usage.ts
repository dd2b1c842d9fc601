/** Token counts read from an OpenAI `usage` object. */
export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  totalTokens?: number;
}

/**
 * Keeps references to the last three chunks of a response (no copying, no array churn on
 * the hot path: retained chunks survive young-generation GCs, so fewer is cheaper) and
 * reads `usage` from them once the response has ended. Engines put it in the last JSON
 * fields or, for streams with `include_usage`, in the last event before `[DONE]`; an
 * object of ~100 bytes cannot span more than three reads.
 */
export class UsageTail {
  private a: Buffer | undefined;
  private b: Buffer | undefined;
  private c: Buffer | undefined;

  push(chunk: Buffer): void {
    this.a = this.b;
    this.b = this.c;
    this.c = chunk;
  }

  /** The last chunk pushed. */
  last(): Buffer | undefined {
    return this.c;
  }

  /** Parse `usage` out of the kept tail; `undefined` when absent. */
  read(): Usage | undefined {
    const kept = [this.a, this.b, this.c].filter((chunk) => chunk !== undefined);
    if (kept.length === 0) return undefined;
    const text = Buffer.concat(kept).toString('latin1');
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
