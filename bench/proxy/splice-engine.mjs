/* global process, Buffer, URL */
// @es/mock-engine (the built library: the project's engine, which returns token ids and
// answers /detokenize and /v1/completions with a token-id prompt, so the proxy can continue
// its generations) with faults injected on the wire for the splice measurement:
// `node splice-engine.mjs <options json>`, the options those of `createMockEngine`.
//
// The fault is set and cleared over IPC (`{ command: 'fault', fault }`, see ipc.mjs), so one
// pair of engines serves the reference requests (no fault), then each scenario:
//   { mode: 'reset' | 'hang', after: N, every: k, plantWrong: m }
// cuts one chat stream in every k this engine answers (the k-th, 2k-th, ...) when its
// (N+1)-th content chunk is due, instead of sending it: `reset` resets the connection (an
// engine that crashed: TCP RST), `hang` sends nothing more and keeps the connection open
// (a wedged engine: the proxy's stall timeout must fire). Only chat streams are cut, never
// the proxy's continuations (`/v1/completions`). With `plantWrong: m`, one continuation in
// every m gets its first content chunk's text altered (a wrong splice the benchmark's checks
// must catch). The requests cut and planted are reported by their `x-request-id`.
import { createMockEngine } from '../../packages/mock-engine/dist/index.mjs';
import { announce } from './ipc.mjs';

const options = JSON.parse(process.argv[2] ?? '{}');
const engine = createMockEngine(options);
let fault;
let chatStreams = 0;
let continuations = 0;
const cut = [];
const planted = [];

const CHAT_CONTENT = '"delta":{"content"';
const COMPLETION_CONTENT = '"choices":[{"index":0,"text":';

/** Wrap `res.write`/`res.end` of one response to apply the fault in force when it began. */
function inject(req, res) {
  const chat = req.url === '/v1/chat/completions';
  const continuation = req.url === '/v1/completions';
  if (fault === undefined || !(chat || continuation)) return;
  const requestId = String(req.headers['x-request-id'] ?? '');
  const { mode, after, every, plantWrong } = fault;
  const write = res.write.bind(res);
  const end = res.end.bind(res);
  let counted = false;
  let doomed = false;
  let plant = false;
  let contentChunks = 0;
  let hung = false;
  // Whether this response is a stream, decided at its first write (an SSE event or JSON).
  const decide = (text) => {
    if (counted) return;
    counted = true;
    if (!text.startsWith('data: ')) return;
    if (chat && mode !== undefined && ++chatStreams % every === 0) doomed = true;
    if (continuation && plantWrong > 0 && ++continuations % plantWrong === 0) plant = true;
  };
  // Returns the text to send now, or undefined when the cut happened before any of it.
  const apply = (text) => {
    if (!doomed && !plant) return text;
    const events = text.split(/(?<=\n\n)/);
    let out = '';
    for (const event of events) {
      const content = event.includes(chat ? CHAT_CONTENT : COMPLETION_CONTENT);
      if (doomed && content && contentChunks === after) {
        cut.push({ requestId, mode, after });
        doomed = false;
        if (mode === 'hang') hung = true;
        else {
          // What was written reaches the proxy first, then the reset (no FIN, no goodbye).
          const reset = () => {
            const socket = res.socket;
            if (socket === null || socket.destroyed) return;
            if (socket.writableLength === 0) socket.resetAndDestroy();
            else socket.once('drain', () => socket.resetAndDestroy());
          };
          if (out === '') reset();
          else write(out, reset);
        }
        return undefined;
      }
      if (plant && content) {
        plant = false;
        planted.push(requestId);
        out += event.replace(COMPLETION_CONTENT + '"', `${COMPLETION_CONTENT}"#`);
        contentChunks++;
        continue;
      }
      if (content) contentChunks++;
      out += event;
    }
    return out;
  };
  res.write = (chunk, ...rest) => {
    if (hung) return true;
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    decide(text);
    const out = apply(text);
    if (out === undefined) return true;
    return write(out, ...rest);
  };
  res.end = (chunk, ...rest) => {
    if (hung) return res;
    if (chunk === undefined || typeof chunk === 'function') return end(chunk, ...rest);
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    decide(text);
    const out = apply(text);
    if (out === undefined) return res;
    return end(out, ...rest);
  };
}

// Before the engine's own handler: every response of the engine passes through `inject`.
engine.server.prependListener('request', inject);
await engine.listen(0, '127.0.0.1');
announce(Number(new URL(engine.url).port), () => ({ cut: cut.length, planted: planted.length }), {
  fault: (message) => {
    fault = message.fault;
    chatStreams = 0;
    continuations = 0;
    return {};
  },
  /** The requests cut and planted since the last call, by x-request-id. */
  drain: () => ({ cut: cut.splice(0), planted: planted.splice(0) }),
});
process.on('SIGINT', () => process.exit(0));
