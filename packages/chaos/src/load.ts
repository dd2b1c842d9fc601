/**
 * The load generator: keeps `concurrency` chat requests running through the scheduler with
 * the official `openai` client (its own retries included), and records each one.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import type { RequestOutcome, RequestRecord } from './history.js';

/** Response headers that may name the worker that served a request, in order of preference. */
export const WORKER_HEADERS = ['x-es-worker-id', 'x-elastic-selected-worker-id', 'x-es-worker'];

export interface LoadOptions {
  /** Scheduler URL, without `/v1`. */
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Fraction of streaming requests (default 0.5). */
  streamRatio?: number;
  /** `max_tokens` of non-streaming requests (default 20). */
  maxTokens?: number;
  /** `max_tokens` of streams, longer so that faults cut some mid-stream (default 80). */
  streamMaxTokens?: number;
  /** The client's retries of connection errors and 5xx, as `openai`'s `maxRetries` (default 2). */
  maxRetries?: number;
  /** A request with no progress for this long is recorded `hung` and aborted (default 20 s). */
  hangTimeoutMs?: number;
  /** Prefix of request ids (default `chaos`). */
  idPrefix?: string;
  /**
   * Seed of the choice streaming / non-streaming: two loads with the same seed and prefix send
   * the same sequence of requests (ids, prompts, `max_tokens`, streaming). Default: random.
   */
  seed?: number;
}

/**
 * The seeded choice of request `seq` in [0, 1): the first 4 bytes of sha256(`seed:seq`), so
 * a request's kind depends on its seed and number only, not on the order lanes start them.
 */
export function seededFraction(seed: number, seq: number): number {
  return createHash('sha256').update(`${seed}:${seq}`).digest().readUInt32BE(0) / 2 ** 32;
}

/** A running load. */
export interface Load {
  /** Records of finished requests so far (live array). */
  readonly records: RequestRecord[];
  /**
   * Resolves once every request started before `time` has ended and been recorded, so a
   * window judged now sees the same requests as the kept history judged again later.
   */
  settled(time: number): Promise<void>;
  /** Change the client retries for requests started from now on. */
  setMaxRetries(retries: number): void;
  /** Stop starting requests; resolves once every request in flight has ended. */
  stop(): Promise<RequestRecord[]>;
}

interface Attempts {
  count: number;
  status?: number;
  headersAt?: number;
  worker?: string;
}

function workerOf(headers: Headers): string | undefined {
  for (const name of WORKER_HEADERS) {
    const value = headers.get(name);
    if (value !== null && value !== '') return value;
  }
  return undefined;
}

/**
 * Start a mixed streaming / non-streaming load.
 * @example
 * const load = startLoad({ baseUrl: scheduler.url, model: 'mock-model', concurrency: 8 });
 * // ... inject a fault ...
 * const history = await load.stop();
 */
export function startLoad(options: LoadOptions): Load {
  const concurrency = options.concurrency ?? 8;
  const streamRatio = options.streamRatio ?? 0.5;
  const hangMs = options.hangTimeoutMs ?? 20_000;
  const prefix = options.idPrefix ?? 'chaos';
  let maxRetries = options.maxRetries ?? 2;
  const seed = options.seed;
  const attempts = new Map<string, Attempts>();
  // Counts the client's HTTP attempts per request (its retries are invisible otherwise).
  const countingFetch: typeof fetch = async (input, init) => {
    const id = new Headers(init?.headers).get('x-request-id') ?? '';
    const a = attempts.get(id);
    if (a) a.count++;
    const response = await fetch(input, init);
    if (a) {
      a.status = response.status;
      a.headersAt = Date.now();
      const worker = workerOf(response.headers);
      if (worker === undefined) delete a.worker;
      else a.worker = worker;
    }
    return response;
  };
  const client = (retries: number) =>
    new OpenAI({
      baseURL: `${options.baseUrl}/v1`,
      apiKey: options.apiKey ?? 'none',
      maxRetries: retries,
      fetch: countingFetch,
    });
  let openai = client(maxRetries);

  const records: RequestRecord[] = [];
  /** Start times of the requests in flight, by id. */
  const running = new Map<string, number>();
  let stopped = false;
  let seq = 0;

  const one = async (): Promise<void> => {
    const id = `${prefix}-${++seq}`;
    const stream = (seed === undefined ? Math.random() : seededFraction(seed, seq)) < streamRatio;
    const a: Attempts = { count: 0 };
    attempts.set(id, a);
    const prompt = `chaos request ${id}`;
    const maxTokens = stream ? (options.streamMaxTokens ?? 80) : (options.maxTokens ?? 20);
    const record: RequestRecord = {
      id,
      stream,
      prompt,
      maxTokens,
      start: Date.now(),
      end: 0,
      bytes: 0,
      outcome: 'ok',
      attempts: 0,
    };
    running.set(id, record.start);
    const abort = new AbortController();
    let hung = false;
    let watchdog: NodeJS.Timeout | undefined;
    const progress = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        hung = true;
        abort.abort();
      }, hangMs);
    };
    progress();
    let outcome: RequestOutcome;
    try {
      // Temperature 0: the engine's output is a pure function of the tokens, which the
      // checker recomputes (see expected.ts).
      const body = {
        model: options.model,
        messages: [{ role: 'user' as const, content: prompt }],
        temperature: 0,
        max_tokens: maxTokens,
      };
      const requestOptions = { headers: { 'x-request-id': id }, signal: abort.signal };
      if (stream) {
        const chunks = await openai.chat.completions.create(
          { ...body, stream: true },
          requestOptions,
        );
        let finished = false;
        let content = '';
        record.content = content;
        for await (const chunk of chunks) {
          progress();
          record.firstByte ??= Date.now();
          for (const choice of chunk.choices) {
            const delta = choice.delta.content ?? '';
            content += delta;
            record.bytes += Buffer.byteLength(delta);
            if (choice.finish_reason) finished = true;
          }
          record.content = content;
        }
        // openai's stream iterator ends quietly when its signal aborts: a stall the watchdog
        // cut is a hung request, never a truncation or (after a finish_reason) a success.
        outcome = hung ? 'hung' : finished ? 'ok' : 'truncated';
      } else {
        const completion = await openai.chat.completions.create(body, requestOptions);
        record.firstByte = a.headersAt;
        const choice = completion.choices[0];
        record.content = choice?.message.content ?? '';
        record.bytes = Buffer.byteLength(record.content);
        outcome = hung ? 'hung' : choice?.finish_reason ? 'ok' : 'truncated';
      }
    } catch (error) {
      if (hung || error instanceof APIUserAbortError) outcome = 'hung';
      else if (error instanceof APIConnectionError) {
        // A connection lost after the first chunk: cut without an error event.
        outcome = record.firstByte === undefined ? 'connection-error' : 'reset';
      } else if (error instanceof APIError) {
        const e = error as APIError & { error?: { code?: unknown; type?: unknown } };
        const code = e.code ?? e.error?.code ?? e.type ?? e.error?.type;
        if (typeof code === 'string') record.errorCode = code;
        if (e.status === undefined) outcome = 'error-event';
        else {
          outcome = 'error-status';
          record.status = e.status;
        }
        record.message = e.message;
      } else {
        // undici's "terminated" and friends: the body was cut under the client.
        outcome = record.firstByte === undefined ? 'connection-error' : 'reset';
        record.message = String(error);
      }
    } finally {
      clearTimeout(watchdog);
    }
    record.end = Date.now();
    record.outcome = outcome;
    record.attempts = a.count;
    if (record.status === undefined && a.status !== undefined) record.status = a.status;
    if (a.worker !== undefined) record.worker = a.worker;
    attempts.delete(id);
    records.push(record);
    running.delete(id);
  };

  const lanes = Array.from({ length: concurrency }, async () => {
    while (!stopped) await one();
  });

  return {
    records,
    async settled(time) {
      // Bounded: every request ends within the hang timeout of its last progress.
      while ([...running.values()].some((start) => start < time)) {
        await sleep(50);
      }
    },
    setMaxRetries(retries) {
      maxRetries = retries;
      openai = client(maxRetries);
    },
    async stop() {
      stopped = true;
      await Promise.all(lanes);
      return records;
    },
  };
}
