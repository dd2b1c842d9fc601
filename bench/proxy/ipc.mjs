/* global process */
// The child side of the benchmark's IPC: each server process announces its port once it
// listens, then answers every 'stats' message with its CPU time, RSS, heap and whatever
// `extra` adds (in-flight requests, planted defects), every 'gc' message (with --expose-gc)
// by collecting garbage first, and every `{ command, ... }` message by its `commands`
// handler's result; it exits when the parent goes away.

/** Tell the parent the port, and answer its 'stats', 'gc' and command messages from now on. */
export function announce(port, extra = () => ({}), commands = {}) {
  // Whatever becomes of the load generator, no server outlives it.
  process.on('disconnect', () => process.exit(0));
  process.on('message', (message) => {
    if (message === 'stats' || message === 'gc') {
      // Twice: a full collection, then one for what the first one's finalizers released.
      if (message === 'gc') for (let i = 0; i < 2; i++) globalThis.gc?.();
      const { rss, heapUsed } = process.memoryUsage();
      process.send?.({ cpu: process.cpuUsage(), rss, heapUsed, ...extra() });
    } else if (typeof message === 'object' && message?.command in commands) {
      process.send?.({ ok: true, ...commands[message.command](message) });
    }
  });
  process.send?.({ port });
}
