/* global Buffer */
// Response checks of the proxy benchmark: every response the load generator reads is
// compared with what the engine sent, so a proxy that loses, duplicates, reorders or alters
// data is counted as failing, never as fast. Pure: no sockets, no clocks.
import { StringDecoder } from 'node:string_decoder';

/** Failure kinds, as counted and printed by the benchmark. */
export const FAILURE_KINDS = ['status', 'transport', 'content', 'sequence', 'unterminated'];

/** The first failure found, as `{ kind, detail }`. */
const failure = (kind, detail) => ({ kind, detail });

/**
 * Check a non-streaming chat completion body against the expected `content` (and `id`, when
 * the engine echoes one per request). Returns a failure or undefined.
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
  const content = body.choices?.[0]?.message?.content;
  if (content !== expected.content) {
    return failure(
      'content',
      `content ${JSON.stringify(content)}, expected ${JSON.stringify(expected.content)}`,
    );
  }
  return undefined;
}

/**
 * Follows one SSE stream: feed it the raw body chunks as they arrive, then call `end()`.
 * Every event must be a chat completion chunk of one id (the expected one, if given); the
 * non-empty `delta.content`s must be `expected.deltas`, in order, none lost or repeated;
 * `data: [DONE]` must come last, after all of them. `onEvent(event)` sees every parsed event
 * (the benchmark reads its send stamp from it).
 */
export function createStreamCheck(expected, onEvent) {
  const decoder = new StringDecoder('utf8');
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
    onEvent?.(chunk);
    const content = chunk.choices?.[0]?.delta?.content;
    if (content === undefined || content === '') return undefined;
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
    next++;
    return undefined;
  };

  return {
    /** Content chunks accepted so far. */
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

/** The bench upstream's content for request `nonce` (see upstream.mjs). */
export const benchExpectation = {
  completion: (nonce) => ({
    id: `chatcmpl-${nonce}`,
    content: `The quick brown fox jumps over the lazy dog. ${nonce}`,
  }),
  stream: (nonce, chunks) => ({
    id: `chatcmpl-${nonce}`,
    deltas: Array.from({ length: chunks }, (_, i) => ` tok${i}`),
  }),
};

/** An SSE body as an engine would send it, for the self-check. */
function sseBody(id, deltas) {
  const event = (delta) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', choices: [{ index: 0, delta }] })}\n\n`;
  return [
    event({ role: 'assistant', content: '' }),
    ...deltas.map((content) => event({ content })),
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

/**
 * Prove the checks can fail: a correct stream passes (whatever the byte boundaries), and each
 * planted defect (lost, repeated, swapped or altered chunk, missing [DONE], data after it,
 * another request's chunk, altered or truncated completion) is reported. Returns the list of
 * cases that did not behave; empty when all did.
 */
export function selfCheck() {
  const expected = benchExpectation.stream('n1', 5);
  const good = sseBody(expected.id, expected.deltas);
  const bad = [];
  for (const split of [1, 7, 64, 1 << 16]) {
    const result = runStream(expected, good, split);
    if (result !== undefined)
      bad.push(`correct stream split every ${split} bytes: ${result.detail}`);
  }
  const without = (i) => good.filter((_, j) => j !== i);
  const cases = {
    'lost chunk': without(3),
    'repeated chunk': [...good.slice(0, 3), good[2], ...good.slice(3)],
    'swapped chunks': [good[0], good[2], good[1], ...good.slice(3)],
    'altered chunk': good.map((e, i) => (i === 2 ? e.replace('tok1', 'tok7') : e)),
    'no [DONE]': good.slice(0, -1),
    'data after [DONE]': [...good, good[1]],
    "another request's chunk": good.map((e, i) =>
      i === 2 ? e.replace('chatcmpl-n1', 'chatcmpl-n2') : e,
    ),
    'cut mid-event': [...good.slice(0, 3), good[3].slice(0, 20)],
  };
  for (const [name, events] of Object.entries(cases)) {
    if (runStream(expected, events, 13) === undefined) bad.push(`${name} passed`);
  }
  const completion = benchExpectation.completion('n1');
  const body = JSON.stringify({
    id: completion.id,
    object: 'chat.completion',
    choices: [{ index: 0, message: { role: 'assistant', content: completion.content } }],
  });
  if (checkCompletion(body, completion) !== undefined) bad.push('correct completion failed');
  if (checkCompletion(body.replace('fox', 'f0x'), completion) === undefined)
    bad.push('altered completion passed');
  if (checkCompletion(body.slice(0, -2), completion) === undefined)
    bad.push('truncated completion passed');
  if (checkCompletion(body, benchExpectation.completion('n2')) === undefined)
    bad.push("another request's completion passed");
  return bad;
}
