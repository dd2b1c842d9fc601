/** Append-only JSONL output that survives crashes and concurrent writers in one process. */
import { open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { isMissingFile, isRecord } from './util.js';

/** Appends one JSON value per line; lines are written whole and in call order. */
export interface JsonlWriter {
  readonly path: string;
  write(value: unknown): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens `path` for appending. If a previous run died mid-line, the partial line is ended
 * first so the next record starts on a line of its own.
 */
export async function createJsonlWriter(path: string): Promise<JsonlWriter> {
  const handle: FileHandle = await open(path, 'a+');
  const { size } = await handle.stat();
  let pending: Promise<void> = Promise.resolve();
  if (size > 0) {
    const last = Buffer.alloc(1);
    await handle.read(last, 0, 1, size - 1);
    if (last.toString() !== '\n') pending = handle.appendFile('\n').then(() => undefined);
  }
  return {
    path,
    write(value) {
      const line = `${JSON.stringify(value)}\n`;
      pending = pending.then(() => handle.appendFile(line));
      return pending;
    },
    async close() {
      await pending.catch(() => undefined);
      await handle.close();
    },
  };
}

/**
 * Reads the key of every complete record in a JSONL file (none when it does not exist):
 * by default its `id`; `keyOf` picks another (undefined skips the record). Unparseable
 * lines, such as one cut short by a crash, are skipped, so their question runs again.
 */
export async function readRecordIds(
  path: string,
  keyOf: (record: Record<string, unknown>) => string | undefined = (record) =>
    typeof record.id === 'string' ? record.id : undefined,
): Promise<Set<string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isMissingFile(error)) return new Set();
    throw error;
  }
  const ids = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const record: unknown = JSON.parse(line);
      const key = isRecord(record) ? keyOf(record) : undefined;
      if (key !== undefined) ids.add(key);
    } catch {
      // A line cut short by a crash: its question is simply generated again.
    }
  }
  return ids;
}
