/* global process */
// The child side of the benchmark's IPC: each server process announces its port once it
// listens, then answers every 'stats' message with its CPU time, RSS and whatever `extra`
// adds (in-flight requests, planted defects); it exits when the parent goes away.

/** Tell the parent the port, and answer its 'stats' requests from now on. */
export function announce(port, extra = () => ({})) {
  // Whatever becomes of the load generator, no server outlives it.
  process.on('disconnect', () => process.exit(0));
  process.on('message', (message) => {
    if (message === 'stats') {
      process.send?.({ cpu: process.cpuUsage(), rss: process.memoryUsage.rss(), ...extra() });
    }
  });
  process.send?.({ port });
}
