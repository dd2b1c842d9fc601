import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Poll `probe` until it returns something other than `undefined` (or time runs out). `what`
 * names the awaited condition in the timeout's error.
 */
export async function until<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
  what?: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new Error(
        what === undefined
          ? `condition not met within ${timeoutMs} ms`
          : `timed out waiting for ${what} (${timeoutMs} ms)`,
      );
    }
    await sleep(25);
  }
}
