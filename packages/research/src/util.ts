/** Small helpers shared inside the package (not exported from the index). */
import { setMaxListeners } from 'node:events';
import { readFile, stat } from 'node:fs/promises';

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function isMissingFile(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A file's text, or undefined when it does not exist. */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (isMissingFile(error)) return undefined;
    throw error;
  }
}

/** Whether `path` is a directory (false when it does not exist). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (error) {
    if (isMissingFile(error)) return false;
    throw error;
  }
}

/** A signal that aborts with its parent, and a way to detach it. */
export interface ChildSignal {
  signal: AbortSignal | undefined;
  dispose(): void;
}

/**
 * Derives a per-request signal from a long-lived one. The openai client adds an abort
 * listener to every signal it is given and never removes it; handing it a short-lived
 * child keeps the long-lived signal's listener list from growing with each request.
 * The child may itself have many listeners at once (one per lane), hence no limit.
 */
export function childSignal(parent: AbortSignal | undefined): ChildSignal {
  if (parent === undefined) return { signal: undefined, dispose: () => undefined };
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  if (parent.aborted) controller.abort(parent.reason);
  const onAbort = () => controller.abort(parent.reason);
  parent.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    dispose: () => parent.removeEventListener('abort', onAbort),
  };
}
