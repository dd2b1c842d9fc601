/**
 * Human-readable log lines for a terminal: `12:04:05.123 INFO  ready 17.0.1  jobId=17 ...`.
 * A pipe or a file gets pino's JSON (one object per line) unchanged.
 */
import type { DestinationStream } from 'pino';

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
// pino's own fields, and the ones the message already says.
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'at', 'event']);

/** One pino JSON line as `HH:MM:SS.mmm LEVEL message  key=value ...`. */
export function formatLogLine(json: string, color = false): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const time = new Date(typeof entry.time === 'number' ? entry.time : Date.now());
  const level = LEVELS[Number(entry.level)] ?? String(entry.level);
  const fields = Object.entries(entry)
    .filter(([key, value]) => !HIDDEN.has(key) && value !== undefined)
    .map(([key, value]) => {
      if (key === 'err' && value && typeof value === 'object' && 'message' in value) {
        return `err=${JSON.stringify((value as { message: unknown }).message)}`;
      }
      return `${key}=${typeof value === 'string' && !/\s/.test(value) ? value : JSON.stringify(value)}`;
    })
    .join(' ');
  const paint =
    color && Number(entry.level) >= 50
      ? '\x1b[31m'
      : color && Number(entry.level) >= 40
        ? '\x1b[33m'
        : '';
  const reset = paint ? '\x1b[0m' : '';
  return `${time.toISOString().slice(11, 23)} ${paint}${level.padEnd(5)}${reset} ${String(entry.msg ?? '')}${fields ? `  ${fields}` : ''}\n`;
}

/** A pino destination that writes {@link formatLogLine} lines to `out` (default stdout). */
export function humanLogStream(
  out: NodeJS.WritableStream = process.stdout,
  color = true,
): DestinationStream {
  return { write: (line: string) => out.write(formatLogLine(line, color)) };
}
