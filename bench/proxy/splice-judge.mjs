/* global Buffer */
// The splice measurement's judgement, pure (no sockets, no clocks): which streams the engines
// cut, which the proxy continued, whether every spliced response reached the client complete
// and correct, and the extra time the client waited at each splice. With its self-check:
// wrong splices and inconsistent counts planted by hand must be reported.
import { createStreamCheck } from './verify.mjs';

/** The proxy's cut reasons a scenario's fault must produce (`ContinuationRecord.cause`). */
export const EXPECTED_CAUSES = { reset: ['connection', 'closed'], hang: ['stall'] };

/**
 * One scenario's verdict. `streams`: what the client saw, `{ requestId, failure, gapMs }`
 * (`gapMs`: between the last token chunk before the cut position and the first after it);
 * `cuts`: what the engines cut (`{ requestId, mode, after }`); `continuations`: the proxy's
 * continuation records; `planted`: the request ids whose continuation was altered on purpose
 * (their responses must fail, every other must pass); `normalIntervalMs`: the inter-chunk gap
 * of uncut streams. Returns the splices counted, the problems found, and for every spliced
 * stream that passed its extra wait (gap less the normal interval) and the proxy's own wait
 * (cut to the continuation's first event).
 */
export function judgeSplices({
  mode,
  streams,
  cuts,
  continuations,
  planted,
  cutAfter,
  normalIntervalMs,
}) {
  const problems = [];
  const byId = new Map(streams.map((s) => [s.requestId, s]));
  const cutIds = new Set(cuts.map((c) => c.requestId));
  const records = new Map();
  for (const record of continuations) {
    const list = records.get(record.requestId) ?? [];
    list.push(record);
    records.set(record.requestId, list);
  }
  if (cuts.length === 0) problems.push(`${mode}: the engines cut no stream (nothing measured)`);
  for (const id of cutIds) {
    const list = records.get(id) ?? [];
    const done = list.filter((r) => r.outcome === 'continued');
    if (done.length !== 1) {
      problems.push(
        `${mode}: ${id} was cut, and continued ${done.length} time(s) (records: ${list.map((r) => `${r.outcome}/${r.reason}`).join(', ') || 'none'})`,
      );
      continue;
    }
    const [record] = done;
    if (!EXPECTED_CAUSES[mode].includes(record.cause))
      problems.push(`${mode}: ${id} was continued after a cut by ${record.cause}`);
    if (record.generatedTokens !== cutAfter)
      problems.push(
        `${mode}: ${id} was cut after ${cutAfter} chunks, the proxy had ${record.generatedTokens} tokens`,
      );
    if (!byId.has(id)) problems.push(`${mode}: ${id} was cut but the client never sent it`);
  }
  for (const id of records.keys()) {
    if (!cutIds.has(id)) problems.push(`${mode}: ${id} was continued without a cut`);
  }
  const plantedIds = new Set(planted);
  const excessMs = [];
  const proxyWaitMs = [];
  for (const s of streams) {
    const wrong = plantedIds.has(s.requestId);
    if (wrong && s.failure === undefined)
      problems.push(`${mode}: ${s.requestId}'s splice was planted wrong and passed its check`);
    if (!wrong && s.failure !== undefined)
      problems.push(
        `${mode}: ${s.requestId}${cutIds.has(s.requestId) ? ' (spliced)' : ''} failed: ${s.failure.kind}: ${s.failure.detail}`,
      );
    if (cutIds.has(s.requestId) && s.failure === undefined) {
      excessMs.push(s.gapMs - normalIntervalMs);
      const waitMs = records.get(s.requestId)?.find((r) => r.outcome === 'continued')?.waitMs;
      if (waitMs !== undefined) proxyWaitMs.push(waitMs);
    }
  }
  return {
    splices: [...cutIds].filter((id) => records.get(id)?.some((r) => r.outcome === 'continued'))
      .length,
    checkedSpliced: streams.filter((s) => cutIds.has(s.requestId)).length,
    correctSpliced: excessMs.length,
    excessMs,
    proxyWaitMs,
    problems,
  };
}

/** A chat SSE body of `deltas` as the proxy sends it to a client that asked for neither ids nor usage. */
function chatStream(id, deltas, finishReason = 'length') {
  const event = (choice) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', choices: [{ index: 0, logprobs: null, ...choice }] })}\n\n`;
  return [
    event({ delta: { role: 'assistant', content: '' }, finish_reason: null }),
    ...deltas.map((content, i) =>
      event({ delta: { content }, finish_reason: i === deltas.length - 1 ? finishReason : null }),
    ),
    'data: [DONE]\n\n',
  ].join('');
}

/** The check's verdict on `body` against `deltas`, fed in 11-byte pieces. */
function check(deltas, body) {
  const c = createStreamCheck({ deltas, finishReason: 'length' });
  const bytes = Buffer.from(body);
  for (let at = 0; at < bytes.length; at += 11) c.push(bytes.subarray(at, at + 11));
  return c.end();
}

/**
 * Prove the splice checks can fail: a correct spliced stream passes, and wrong splices (the
 * continuation's first token altered, the continuation started from scratch, a token lost or
 * repeated at the splice) are caught by the stream check; the judge reports a spliced
 * response that failed, a planted wrong splice that passed, a cut never continued, a
 * continuation without a cut, a cut by the wrong cause, and a scenario without cuts.
 * Returns the cases that did not behave; empty when all did.
 */
export function spliceSelfCheck() {
  const bad = [];
  // Multi-byte text split across chunks, as the mock engine's detokenizer releases it.
  const deltas = ['The', ' fox', '', ' \u00e9t\u00e9', ' runs', ' far', ' away', '.'];
  const at = 3;
  const id = 'chatcmpl-s';
  if (check(deltas, chatStream(id, deltas)) !== undefined)
    bad.push('correct spliced stream failed');
  const after = deltas.slice(at);
  const wrong = {
    "wrong splice: the continuation's first token altered": [
      ...deltas.slice(0, at),
      `#${after[0]}`,
      ...after.slice(1),
    ],
    'wrong splice: the continuation started from scratch': [...deltas.slice(0, at), ...deltas],
    'wrong splice: a token lost at the splice': [...deltas.slice(0, at), ...after.slice(1)],
    'wrong splice: a token repeated at the splice': [
      ...deltas.slice(0, at),
      deltas[at - 1],
      ...after,
    ],
  };
  for (const [name, sent] of Object.entries(wrong)) {
    if (check(deltas, chatStream(id, sent)) === undefined) bad.push(`${name} passed`);
  }
  const failure = check(
    deltas,
    chatStream(id, wrong["wrong splice: the continuation's first token altered"]),
  );
  const base = {
    mode: 'reset',
    streams: [
      { requestId: 'a', failure: undefined, gapMs: 300 },
      { requestId: 'b', failure: undefined, gapMs: 50 },
    ],
    cuts: [{ requestId: 'a', mode: 'reset', after: at }],
    continuations: [
      {
        requestId: 'a',
        outcome: 'continued',
        cause: 'connection',
        generatedTokens: at,
        waitMs: 240,
      },
    ],
    planted: [],
    cutAfter: at,
    normalIntervalMs: 50,
  };
  const good = judgeSplices(base);
  if (good.problems.length > 0 || good.splices !== 1 || good.excessMs[0] !== 250)
    bad.push(`a correct scenario was judged ${JSON.stringify(good)}`);
  const cases = {
    'a planted wrong splice (content differs) reported as correct': {
      streams: [{ ...base.streams[0], failure }, base.streams[1]],
    },
    'a planted wrong splice that passed its check': { planted: ['a'] },
    'a cut never continued': { continuations: [] },
    'a continuation without a cut': {
      continuations: [...base.continuations, { ...base.continuations[0], requestId: 'b' }],
    },
    'a cut by the wrong cause': { mode: 'hang', cuts: [{ ...base.cuts[0], mode: 'hang' }] },
    'a scenario without cuts': { cuts: [], continuations: [] },
  };
  for (const [name, change] of Object.entries(cases)) {
    if (judgeSplices({ ...base, ...change }).problems.length === 0)
      bad.push(`${name}: not reported`);
  }
  // The planted wrong splice, planted on purpose: its failure is the expected outcome.
  const planted = judgeSplices({
    ...base,
    streams: [{ ...base.streams[0], failure }, base.streams[1]],
    planted: ['a'],
  });
  if (planted.problems.length > 0)
    bad.push(`an expected planted failure was reported: ${planted.problems[0]}`);
  return bad;
}
