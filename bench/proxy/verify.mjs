/* global Buffer, structuredClone */
// Response checks of the proxy benchmark: every response the load generator reads is
// compared with what the engine sent, so a proxy that loses, duplicates, reorders or alters
// data is counted as failing, never as fast. Pure: no sockets, no clocks.
import { StringDecoder } from 'node:string_decoder';

/** Failure kinds, as counted and printed by the benchmark. */
export const FAILURE_KINDS = ['status', 'transport', 'content', 'sequence', 'unterminated'];

/** The first failure found, as `{ kind, detail }`. */
const failure = (kind, detail) => ({ kind, detail });

/** The client never asks for token ids or usage: a proxy that adds them must remove them. */
function unaskedTokenIds(body, choice) {
  if (body.prompt_token_ids !== undefined && body.prompt_token_ids !== null)
    return failure('content', 'prompt_token_ids the client did not ask for');
  if (choice?.token_ids !== undefined && choice.token_ids !== null)
    return failure('content', 'token_ids the client did not ask for');
  return undefined;
}

/**
 * Check a non-streaming chat completion body against `expected`: its `content`, and when
 * given its `id` (the engine echoes one per request), `finishReason` and `completionTokens`
 * (`usage.completion_tokens`). Token ids, never asked for, must be absent or null. Returns a
 * failure or undefined.
 */
export function checkCompletion(text, expected) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return failure('content', `body is not JSON: ${text.slice(0, 80)}`);
  }
  if (body.object !== 'chat.completion') return failure('content', `object ${body.object}`);
  if (expected.id !== undefined && body.id !== expected.id) {
    return failure('content', `id ${body.id}, expected ${expected.id}`);
  }
  const choice = body.choices?.[0];
  const content = choice?.message?.content;
  if (content !== expected.content) {
    return failure(
      'content',
      `content ${JSON.stringify(content)}, expected ${JSON.stringify(expected.content)}`,
    );
  }
  if (expected.finishReason !== undefined && choice.finish_reason !== expected.finishReason) {
    return failure(
      'content',
      `finish_reason ${choice.finish_reason}, expected ${expected.finishReason}`,
    );
  }
  const tokens = body.usage?.completion_tokens;
  if (expected.completionTokens !== undefined && tokens !== expected.completionTokens) {
    return failure(
      'content',
      `usage.completion_tokens ${tokens}, expected ${expected.completionTokens}`,
    );
  }
  return unaskedTokenIds(body, choice);
}

/**
 * Follows one SSE stream: feed it the raw body chunks as they arrive, then call `end()`.
 * Every event must be a chat completion chunk of one id (the expected one, if given), with
 * no token ids and no usage chunk (the client asks for neither). An optional role chunk
 * (`delta.role`, no text) comes first; every other chunk is one token's: their
 * `delta.content`s must be `expected.deltas` in order, `""` included (an engine sends `""`
 * while a multi-byte character is incomplete), none lost, repeated or altered; the last one
 * carries `expected.finishReason` (when given) and no earlier one a finish reason; with
 * `expected.stamped` each carries the engine's `t` stamp (a field unknown to OpenAI's
 * schema that a proxy must pass through). `data: [DONE]` must come last, after all of them.
 * `onToken(event)` sees every token's event once accepted (the benchmark counts them and
 * reads the stamp).
 */
export function createStreamCheck(expected, onToken) {
  const decoder = new StringDecoder('utf8');
  const last = expected.deltas.length - 1;
  let pending = '';
  let next = 0;
  let id = expected.id;
  let done = false;
  let result;

  const event = (raw) => {
    if (!raw.startsWith('data: '))
      return failure('content', `not an SSE data line: ${raw.slice(0, 60)}`);
    const data = raw.slice(6);
    if (done) return failure('unterminated', `data after [DONE]: ${data.slice(0, 60)}`);
    if (data === '[DONE]') {
      done = true;
      if (next !== expected.deltas.length) {
        return failure('sequence', `[DONE] after ${next} of ${expected.deltas.length} chunks`);
      }
      return undefined;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      return failure('content', `event is not JSON: ${data.slice(0, 60)}`);
    }
    if (chunk.object !== 'chat.completion.chunk')
      return failure('content', `object ${chunk.object}`);
    id ??= chunk.id;
    if (chunk.id !== id) return failure('content', `id ${chunk.id} within stream ${id}`);
    const choice = chunk.choices?.[0];
    if (choice === undefined) return failure('content', 'a chunk without a choice (usage?)');
    const unasked = unaskedTokenIds(chunk, choice);
    if (unasked !== undefined) return unasked;
    const delta = choice.delta ?? {};
    if (delta.role !== undefined) {
      if (next > 0) return failure('sequence', `role chunk after ${next} token chunks`);
      if (delta.content !== undefined && delta.content !== '')
        return failure('content', `role chunk with text ${JSON.stringify(delta.content)}`);
      return undefined;
    }
    const content = delta.content;
    if (next > last) return failure('sequence', `chunk ${next} of ${expected.deltas.length}`);
    const want = expected.deltas[next];
    if (content !== want) {
      // A later chunk in this place is a loss, an earlier one a repetition.
      const at = expected.deltas.indexOf(content, next + 1);
      const kind =
        at > next || expected.deltas.lastIndexOf(content, next - 1) >= 0 ? 'sequence' : 'content';
      return failure(
        kind,
        `chunk ${next}: ${JSON.stringify(content)}, expected ${JSON.stringify(want)}`,
      );
    }
    const finish = choice.finish_reason ?? null;
    if (next < last && finish !== null)
      return failure('sequence', `finish_reason ${finish} at chunk ${next} of ${last + 1}`);
    if (next === last && expected.finishReason !== undefined && finish !== expected.finishReason)
      return failure(
        'content',
        `last chunk's finish_reason ${finish}, expected ${expected.finishReason}`,
      );
    if (expected.stamped && chunk.t === undefined)
      return failure('content', `chunk ${next} lost the engine's "t" field`);
    next++;
    onToken?.(chunk);
    return undefined;
  };

  return {
    /** Token chunks accepted so far. */
    get chunks() {
      return next;
    },
    /** The first failure so far, if any. */
    get failure() {
      return result;
    },
    /** Feed one body chunk (Buffer or string). */
    push(data) {
      if (result !== undefined) return;
      pending += typeof data === 'string' ? data : decoder.write(data);
      for (let end = pending.indexOf('\n\n'); end >= 0; end = pending.indexOf('\n\n')) {
        const raw = pending.slice(0, end);
        pending = pending.slice(end + 2);
        result = event(raw);
        if (result !== undefined) return;
      }
    },
    /** The body ended: the first failure, or undefined when the stream was complete. */
    end() {
      if (result !== undefined) return result;
      pending += decoder.end();
      if (pending !== '') return failure('unterminated', `trailing bytes: ${pending.slice(0, 60)}`);
      if (!done)
        return failure(
          'unterminated',
          `no [DONE] after ${next} of ${expected.deltas.length} chunks`,
        );
      return undefined;
    },
  };
}

/** `usage.prompt_tokens` of every bench upstream answer (its `prompt_token_ids` has as many). */
export const BENCH_PROMPT_TOKENS = 12;

/**
 * The bench upstream's answer to request `nonce` of `tokens` tokens, token by token (the one
 * definition upstream.mjs answers with): the nonce, then " tok1", " tok2", ... Streamed, one
 * chunk per token; not streamed, the same text joined.
 */
export function benchAnswer(nonce, tokens) {
  const pieces = [nonce];
  for (let i = 1; i < tokens; i++) pieces.push(` tok${i}`);
  return pieces;
}

/** What the bench upstream must have sent for request `nonce` (see upstream.mjs). */
export const benchExpectation = {
  completion: (nonce, tokens) => ({
    id: `chatcmpl-${nonce}`,
    content: benchAnswer(nonce, tokens).join(''),
    finishReason: 'length',
    completionTokens: tokens,
  }),
  stream: (nonce, tokens) => ({
    id: `chatcmpl-${nonce}`,
    deltas: benchAnswer(nonce, tokens),
    finishReason: 'length',
    stamped: true,
  }),
  /** An idle stream: its first token only (not the last, so no finish reason). */
  idle: (nonce) => ({ id: `chatcmpl-${nonce}`, deltas: [nonce], stamped: true }),
  /** A held stream: its first `tokens` tokens (not the last, so no finish reason). */
  held: (nonce, tokens) => ({
    id: `chatcmpl-${nonce}`,
    deltas: benchAnswer(nonce, tokens),
    stamped: true,
  }),
};

/** An SSE body as an engine would send it (a role chunk, then one chunk per token), for the self-check. */
function sseBody(id, deltas) {
  const event = (choice, extra) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', choices: [{ index: 0, logprobs: null, ...choice }], ...extra })}\n\n`;
  return [
    event({ delta: { role: 'assistant', content: '' }, finish_reason: null }),
    ...deltas.map((content, i) =>
      event(
        { delta: { content }, finish_reason: i === deltas.length - 1 ? 'length' : null },
        { t: String(i) },
      ),
    ),
    'data: [DONE]\n\n',
  ];
}

function runStream(expected, events, splitEvery) {
  const check = createStreamCheck(expected);
  const bytes = Buffer.from(events.join(''));
  for (let at = 0; at < bytes.length; at += splitEvery)
    check.push(bytes.subarray(at, at + splitEvery));
  return check.end();
}

/** `events` with event `i` changed by `edit` (a function of its parsed JSON). */
const editEvent = (events, i, edit) =>
  events.map((e, j) => {
    if (j !== i) return e;
    const parsed = JSON.parse(e.slice(6));
    edit(parsed);
    return `data: ${JSON.stringify(parsed)}\n\n`;
  });

/**
 * Prove the checks can fail: a correct stream passes (whatever the byte boundaries), and each
 * planted defect (lost, repeated, swapped or altered chunk, a lost empty-text chunk, missing
 * [DONE], data after it, another request's chunk, a finish reason missing or early, token ids
 * or usage not asked for, the engine's stamp dropped; an altered, truncated or misattributed
 * completion, wrong usage or finish reason, token ids not asked for) is reported. Returns the
 * list of cases that did not behave; empty when all did.
 */
export function selfCheck() {
  const expected = benchExpectation.stream('n1', 5);
  const good = sseBody(expected.id, expected.deltas);
  // An engine's chunks of a multi-byte character: text only once it is complete.
  const bytewise = {
    id: 'chatcmpl-m',
    deltas: [' a', '', '', ' \u20ac', ' b'],
    finishReason: 'length',
  };
  const goodBytewise = sseBody(bytewise.id, bytewise.deltas);
  const bad = [];
  for (const [what, exp, events] of [
    ['correct stream', expected, good],
    ['correct stream with empty-text chunks', bytewise, goodBytewise],
  ]) {
    for (const split of [1, 7, 64, 1 << 16]) {
      const result = runStream(exp, events, split);
      if (result !== undefined) bad.push(`${what} split every ${split} bytes: ${result.detail}`);
    }
  }
  const without = (i) => good.filter((_, j) => j !== i);
  const cases = {
    'lost chunk': without(3),
    'repeated chunk': [...good.slice(0, 3), good[2], ...good.slice(3)],
    'swapped chunks': [good[0], good[2], good[1], ...good.slice(3)],
    'altered chunk': good.map((e, i) => (i === 3 ? e.replace('tok2', 'tok7') : e)),
    'role chunk late': [good[1], good[0], ...good.slice(2)],
    'no [DONE]': good.slice(0, -1),
    'data after [DONE]': [...good, good[1]],
    "another request's chunk": good.map((e, i) =>
      i === 2 ? e.replace('chatcmpl-n1', 'chatcmpl-n2') : e,
    ),
    'cut mid-event': [...good.slice(0, 3), good[3].slice(0, 20)],
    'no finish reason': editEvent(good, 5, (e) => (e.choices[0].finish_reason = null)),
    'early finish reason': editEvent(good, 2, (e) => (e.choices[0].finish_reason = 'stop')),
    'token ids not asked for': editEvent(good, 2, (e) => (e.choices[0].token_ids = [7])),
    'prompt ids not asked for': editEvent(good, 0, (e) => (e.prompt_token_ids = [1, 2])),
    'usage chunk not asked for': [
      ...good.slice(0, -1),
      `data: ${JSON.stringify({ id: expected.id, object: 'chat.completion.chunk', choices: [], usage: {} })}\n\n`,
      good.at(-1),
    ],
    'stamp dropped': editEvent(good, 3, (e) => delete e.t),
  };
  for (const [name, events] of Object.entries(cases)) {
    if (runStream(expected, events, 13) === undefined) bad.push(`${name} passed`);
  }
  if (
    runStream(
      bytewise,
      goodBytewise.filter((_, i) => i !== 2),
      13,
    ) === undefined
  )
    bad.push('lost empty-text chunk passed');
  const completion = benchExpectation.completion('n1', 5);
  const response = {
    id: completion.id,
    object: 'chat.completion',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: completion.content },
        finish_reason: 'length',
        token_ids: null,
      },
    ],
    usage: { prompt_tokens: BENCH_PROMPT_TOKENS, completion_tokens: 5, total_tokens: 17 },
    prompt_token_ids: null,
  };
  const body = JSON.stringify(response);
  const edited = (edit) => {
    const copy = structuredClone(response);
    edit(copy);
    return JSON.stringify(copy);
  };
  if (checkCompletion(body, completion) !== undefined) bad.push('correct completion failed');
  const completionCases = {
    'altered completion': body.replace('tok2', 'tok7'),
    'truncated completion': body.slice(0, -2),
    'wrong usage': edited((r) => (r.usage.completion_tokens = 6)),
    'wrong finish reason': edited((r) => (r.choices[0].finish_reason = 'stop')),
    'token ids not asked for': edited((r) => (r.choices[0].token_ids = [1, 2, 3, 4, 5])),
    'prompt ids not asked for': edited((r) => (r.prompt_token_ids = [1])),
  };
  for (const [name, text] of Object.entries(completionCases)) {
    if (checkCompletion(text, completion) === undefined) bad.push(`${name} passed`);
  }
  if (checkCompletion(body, benchExpectation.completion('n2', 5)) === undefined)
    bad.push("another request's completion passed");
  return bad;
}
