/**
 * Keys never reach a log line: the binaries write their logs through a stream that
 * replaces every known secret (the shared secret, the keys derived from it, client and
 * admin keys) with `[redacted]`, whatever field or message carries it.
 */

/** What a secret is replaced with. */
export const REDACTED = '[redacted]';

const ENGINE_KEY = /es-engine-[0-9a-f]{48}/g;

/** Secrets shorter than this are not searched for (they would redact ordinary words). */
const MIN_SECRET_LENGTH = 8;

/**
 * `text` with every occurrence of each secret, and every engine key (`es-engine-<48 hex>`),
 * replaced by {@link REDACTED} (longest first, so a secret that contains another is
 * replaced whole).
 * @example
 * redactSecrets('key=abcdef123456', ['abcdef123456']); // 'key=[redacted]'
 */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  // Engine keys of any job (`deriveEngineKey`), known or not.
  let result = text.replace(ENGINE_KEY, REDACTED);
  for (const secret of usable(secrets)) {
    if (result.includes(secret)) result = result.split(secret).join(REDACTED);
  }
  return result;
}

function usable(secrets: readonly string[]): string[] {
  return [...new Set(secrets.map((s) => s.trim()))]
    .filter((s) => s.length >= MIN_SECRET_LENGTH)
    .sort((a, b) => b.length - a.length);
}

/** A destination that takes text lines (a pino destination, `process.stdout`). */
export interface LineSink {
  write(text: string): unknown;
}

/**
 * A destination that writes to `out` with every secret redacted; `secrets` is read on
 * every line, so keys learnt later (a key file read after the logger was made) count too.
 * @example
 * const logger = pino({}, redactingStream(() => [secret, apiKey]));
 */
export function redactingStream(
  secrets: () => readonly string[],
  out: LineSink = process.stdout,
): LineSink {
  return { write: (text: string) => out.write(redactSecrets(text, secrets())) };
}
