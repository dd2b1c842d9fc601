/**
 * The engine's running batch, as vLLM's scheduler keeps it: at most `maxNumSeqs`
 * generations run at once (0: no limit), the others wait in order, and the KV cache holds
 * the prompt and generated tokens of the running ones.
 */
import type { IncomingMessage } from 'node:http';

/** One admitted generation, tracked for the gauges and for cancellation. */
export interface Sequence {
  tokens: number;
  timer: NodeJS.Timeout | undefined;
  /** Leave the batch (idempotent): frees its KV tokens and admits the next waiter. */
  release: () => void;
}

interface Waiter {
  admit: () => void;
}

/** The running and waiting generations and their KV tokens. */
export interface Batch {
  /** Wait for a generation slot; resolves to a sequence, or undefined if the client left. */
  admit(req: IncomingMessage, promptTokens: number): Promise<Sequence | undefined>;
  /** Count `n` more tokens of `seq` in the KV cache. */
  addTokens(seq: Sequence, n: number): void;
  /** Release every running sequence and forget the waiting ones (the engine closes). */
  clear(): void;
  readonly running: number;
  readonly waiting: number;
  readonly kvTokens: number;
}

/** An empty batch of at most `maxNumSeqs` running generations (0: unbounded). */
export function createBatch(maxNumSeqs: number): Batch {
  const running = new Set<Sequence>();
  const waiting: Waiter[] = [];
  let kvTokens = 0;

  const admit = (req: IncomingMessage, promptTokens: number): Promise<Sequence | undefined> =>
    new Promise((resolve) => {
      const start = () => {
        const seq: Sequence = {
          tokens: promptTokens,
          timer: undefined,
          release: () => {
            if (!running.delete(seq)) return;
            if (seq.timer) clearTimeout(seq.timer);
            kvTokens -= seq.tokens;
            const next = waiting.shift();
            if (next) next.admit();
          },
        };
        running.add(seq);
        kvTokens += promptTokens;
        resolve(seq);
      };
      if (maxNumSeqs === 0 || running.size < maxNumSeqs) {
        start();
        return;
      }
      const waiter: Waiter = { admit: start };
      waiting.push(waiter);
      req.socket.once('close', () => {
        const i = waiting.indexOf(waiter);
        if (i !== -1) {
          waiting.splice(i, 1);
          resolve(undefined);
        }
      });
    });

  return {
    admit,
    addTokens(seq, n) {
      seq.tokens += n;
      kvTokens += n;
    },
    clear() {
      for (const seq of [...running]) seq.release();
      waiting.length = 0;
    },
    get running() {
      return running.size;
    },
    get waiting() {
      return waiting.length;
    },
    get kvTokens() {
      return kvTokens;
    },
  };
}
